"""Who may see which camera, when and why: the core's access layer.

Every operation an agency performs goes through ``AccessService`` — gRPC servicers and the
browser console alike — so one place authenticates, decides with the policy, signs grants,
writes the audit log, and takes access away again when a grant ends. It is plain async code:
tests drive it without gRPC.

Default deny. A decision is written to the audit log before anything is relayed; if the log
cannot be written, access is refused (fail closed).

Denials of a view say why without revealing whether a camera exists: an unknown camera and a
camera outside every grant the caller holds get the same answer.

The package, one job a module:

* ``service`` — ``AccessService``, the façade: builds the parts below and routes each call;
* ``caller`` — ``Caller``, an authenticated operator and their address;
* ``recorder`` — ``AuditRecorder``: the access layer's audit records, fail closed;
* ``denials`` — every sentence a caller is refused with;
* ``incident_desk`` — report, show, list and close incidents;
* ``session_desk`` — decide a view, sign its grant, broker the session; close, show, revoke;
* ``trail_desk`` — move, link and hand off incidents;
* ``break_glass_desk`` — start, stop and review break-glass windows;
* ``grant_sweeper`` — end the sessions whose grant has ended.
"""

from cloud_core.access.caller import Caller
from cloud_core.access.incident_desk import AreaRequest, IncidentReport
from cloud_core.access.service import AccessService
from cloud_core.access.session_desk import SessionState
from cloud_core.policy import VIEW_ROLES

__all__ = ["VIEW_ROLES", "AccessService", "AreaRequest", "Caller", "IncidentReport",
           "SessionState"]

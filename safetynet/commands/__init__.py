"""One module per ``safetynet`` command group, each with ``register(subcommands)``.

    core        run the cloud core
    agent       run a district's edge agent; ``agent install|check`` for district IT
    sim         simulators: pilot districts' agent configs, RTSP cameras
    demo        broker, core and both pilot agents on this machine
    view        watch a camera through the core
    cameras     list the registry's cameras
    provision   the city's CA, district enrolment and bundles, broker config
    operator    add, list and disable operators (on the core's database)
    incident    report, close and list incidents (through the core)
    breakglass  a supervisor's emergency access, and its review
    audit       verify and export the audit log

What they share sits beside them, named for what it is: ``exceptions`` (``UserError``, exit
codes), ``arguments`` (flags several commands take, and parsing their values), ``core_connection``
(reaching the core: address, token, TLS, gRPC stubs), ``core_database`` (the core's database files
for the offline commands) and ``run_loop`` (running a command until Ctrl-C). Command modules never
import one another or ``safetynet.cli``; heavy imports happen when a command runs, so ``--help``
stays fast.
"""

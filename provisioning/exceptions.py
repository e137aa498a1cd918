"""Errors of provisioning.

    ProvisioningError
    ├── CityError                the city folder is missing, incomplete or already set up (path, problem)
    ├── DistrictError            a district cannot be added, updated or revoked (district_id, problem)
    ├── ReplicaError             a core replica cannot be added or revoked (replica, problem)
    ├── InventoryRejected        a camera inventory has bad rows; nothing was imported (path, problems)
    └── BundleError              an agent bundle is unreadable, altered or cannot be installed (path, problem)

The CLI prints these as one line (``InventoryRejected``: one line per problem) and exits non-zero.
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime.camera_inventory import InventoryProblem


class ProvisioningError(Exception):
    """Base of every error provisioning raises on purpose."""


class CityError(ProvisioningError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class DistrictError(ProvisioningError):
    def __init__(self, district_id: str, problem: str) -> None:
        super().__init__(f"district {district_id}: {problem}")
        self.district_id = district_id
        self.problem = problem


class ReplicaError(ProvisioningError):
    def __init__(self, replica: str, problem: str) -> None:
        super().__init__(f"core replica {replica}: {problem}")
        self.replica = replica
        self.problem = problem


class InventoryRejected(ProvisioningError):
    def __init__(self, path: str, problems: Sequence[InventoryProblem]) -> None:
        super().__init__(f"{path}: {len(problems)} problem(s), nothing imported")
        self.path = path
        self.problems = tuple(problems)


class BundleError(ProvisioningError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

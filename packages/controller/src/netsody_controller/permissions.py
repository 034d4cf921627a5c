"""The permission table: which role may do what in a network.

| action               | Owner | Admin | Editor | Member |
| -------------------- | ----- | ----- | ------ | ------ |
| read                 | yes   | yes   | yes    | yes    |
| edit nodes           | yes   | yes   | yes    |        |
| edit resources       | yes   | yes   | yes    |        |
| edit policies        | yes   | yes   | yes    |        |
| manage join keys     | yes   | yes   |        |        |
| manage users         | yes   | yes   |        |        |
| edit network         | yes   | yes   |        |        |
| delete network       | yes   |       |        |        |
| transfer ownership   | yes   |       |        |        |

Rules on memberships that a table of actions cannot express live in `check_membership_change`:
nobody removes the Owner or changes the Owner's role, and the Owner role is only given by a
transfer. Every API endpoint calls `require` (or `require_membership`) with one of these actions.
"""

from __future__ import annotations

from enum import StrEnum

from netsody_controller.errors import ForbiddenError


class Action(StrEnum):
    READ = "read"
    EDIT_NODES = "edit_nodes"
    EDIT_RESOURCES = "edit_resources"
    EDIT_POLICIES = "edit_policies"
    MANAGE_KEYS = "manage_keys"
    MANAGE_USERS = "manage_users"
    EDIT_NETWORK = "edit_network"
    DELETE_NETWORK = "delete_network"
    TRANSFER_OWNERSHIP = "transfer_ownership"


OWNER = "owner"
ADMIN = "admin"
EDITOR = "editor"
MEMBER = "member"
ROLES = (OWNER, ADMIN, EDITOR, MEMBER)

_MEMBER_ACTIONS = frozenset({Action.READ})
_EDITOR_ACTIONS = _MEMBER_ACTIONS | {
    Action.EDIT_NODES,
    Action.EDIT_RESOURCES,
    Action.EDIT_POLICIES,
}
_ADMIN_ACTIONS = _EDITOR_ACTIONS | {Action.MANAGE_KEYS, Action.MANAGE_USERS, Action.EDIT_NETWORK}
_OWNER_ACTIONS = _ADMIN_ACTIONS | {Action.DELETE_NETWORK, Action.TRANSFER_OWNERSHIP}

PERMISSIONS: dict[str, frozenset[Action]] = {
    OWNER: _OWNER_ACTIONS,
    ADMIN: _ADMIN_ACTIONS,
    EDITOR: _EDITOR_ACTIONS,
    MEMBER: _MEMBER_ACTIONS,
}


def allowed(role: str, action: Action) -> bool:
    """Tell whether `role` may perform `action`. An unknown role may do nothing."""
    return action in PERMISSIONS.get(role, frozenset())


def require(role: str, action: Action) -> None:
    """Raise ForbiddenError unless `role` may perform `action`."""
    if not allowed(role, action):
        raise ForbiddenError(
            f"Your role {role!r} in this network does not allow {action.value.replace('_', ' ')}; "
            "ask the network's Owner or an Admin"
        )


def check_membership_change(*, actor_role: str, target_role: str, new_role: str | None) -> None:
    """Raise ForbiddenError unless a user of `actor_role` may change a member of `target_role`.

    `new_role` None means removal. Managing users needs MANAGE_USERS. The Owner cannot be
    removed or demoted by anybody, and nobody becomes Owner except through a transfer.
    """
    require(actor_role, Action.MANAGE_USERS)
    if target_role == OWNER:
        what = "removed" if new_role is None else "given another role"
        raise ForbiddenError(
            f"The network's Owner cannot be {what}. The Owner transfers ownership first"
        )
    if new_role == OWNER:
        raise ForbiddenError(
            "The Owner role is given only by a transfer of ownership from the Owner"
        )

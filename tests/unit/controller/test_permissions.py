"""The permission table and the membership rules."""

from __future__ import annotations

import pytest

from netsody_controller import permissions
from netsody_controller.errors import ForbiddenError
from netsody_controller.permissions import Action

EXPECTED = {
    Action.READ: {"owner", "admin", "editor", "member"},
    Action.EDIT_NODES: {"owner", "admin", "editor"},
    Action.EDIT_RESOURCES: {"owner", "admin", "editor"},
    Action.EDIT_POLICIES: {"owner", "admin", "editor"},
    Action.MANAGE_KEYS: {"owner", "admin"},
    Action.MANAGE_USERS: {"owner", "admin"},
    Action.EDIT_NETWORK: {"owner", "admin"},
    Action.DELETE_NETWORK: {"owner"},
    Action.TRANSFER_OWNERSHIP: {"owner"},
}


@pytest.mark.parametrize("action", list(Action), ids=str)
@pytest.mark.parametrize("role", permissions.ROLES)
def test_permission_table(role, action):
    assert permissions.allowed(role, action) == (role in EXPECTED[action])


def test_every_action_in_expected_table():
    assert set(EXPECTED) == set(Action)


def test_unknown_role_may_do_nothing():
    assert not any(permissions.allowed("guest", action) for action in Action)


def test_require_message_names_role_and_action():
    with pytest.raises(ForbiddenError, match=r"role .member. .* does not allow edit nodes"):
        permissions.require("member", Action.EDIT_NODES)


@pytest.mark.parametrize("actor", ["owner", "admin"])
def test_owner_cannot_be_removed(actor):
    with pytest.raises(ForbiddenError, match="Owner cannot be removed"):
        permissions.check_membership_change(actor_role=actor, target_role="owner", new_role=None)


def test_owner_cannot_be_demoted():
    with pytest.raises(ForbiddenError, match="cannot be given another role"):
        permissions.check_membership_change(
            actor_role="owner", target_role="owner", new_role="admin"
        )


def test_owner_role_only_by_transfer():
    with pytest.raises(ForbiddenError, match="only by a transfer"):
        permissions.check_membership_change(
            actor_role="owner", target_role="member", new_role="owner"
        )


def test_admin_manages_members():
    permissions.check_membership_change(actor_role="admin", target_role="member", new_role="editor")
    permissions.check_membership_change(actor_role="admin", target_role="editor", new_role=None)


@pytest.mark.parametrize("actor", ["editor", "member"])
def test_non_admin_cannot_manage_members(actor):
    with pytest.raises(ForbiddenError):
        permissions.check_membership_change(
            actor_role=actor, target_role="member", new_role="editor"
        )

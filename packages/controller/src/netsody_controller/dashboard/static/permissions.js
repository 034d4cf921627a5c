// The role table of the controller (netsody_controller.permissions), used to hide what a role
// cannot do. The API enforces the same table, so this only spares users a failing request.

const MEMBER = ["read"];
const EDITOR = [...MEMBER, "edit_nodes", "edit_resources", "edit_policies"];
const ADMIN = [...EDITOR, "manage_keys", "manage_users", "edit_network"];
const OWNER = [...ADMIN, "delete_network", "transfer_ownership"];
const ACTIONS = { member: MEMBER, editor: EDITOR, admin: ADMIN, owner: OWNER };

export function can(role, action) {
  return (ACTIONS[role] ?? []).includes(action);
}

// One network: a tab bar over its nodes, members, groups, policies, resources, join keys,
// invitations and the "Connect a device" panel.

import { formatTime, h, inlineForm, replaceChildren, splitList, table, tags } from "./dom.js";
import {
  renderConnect,
  renderInvitations,
  renderJoinKeys,
  renderPolicies,
  renderResources,
} from "./access.js";
import { act } from "./api.js";
import { can } from "./permissions.js";

const TABS = [
  ["nodes", "Nodes", renderNodes],
  ["members", "Members", renderMembers],
  ["groups", "Groups", renderGroups],
  ["policies", "Policies", renderPolicies],
  ["resources", "Resources", renderResources],
  ["join-keys", "Join keys", renderJoinKeys],
  ["invitations", "Invitations", renderInvitations],
  ["connect", "Connect a device", renderConnect],
];

export async function renderNetwork(context, main, networkId, tab) {
  const network = await context.api.get(`/networks/${encodeURIComponent(networkId)}`);
  const base = `#/networks/${encodeURIComponent(network.id)}`;
  const entry = TABS.find(([name]) => name === tab) ?? TABS[0];
  const panel = h("section", { id: `tab-${entry[0]}` });
  const page = {
    ...context,
    network,
    role: network.role,
    path: `/networks/${encodeURIComponent(network.id)}`,
    reload: () => renderNetwork(context, main, networkId, entry[0]).catch((error) => context.showError(error.message)),
  };
  replaceChildren(
    main,
    h("p", {}, h("a", { href: "#/" }, "← Networks")),
    h("h1", { id: "network-name" }, network.name),
    h("p", { class: "muted" }, `${network.subnet} · your role: `, h("strong", { id: "role" }, network.role),
      ` · revision ${network.revision}`),
    h("nav", { class: "tabs" }, TABS.map(([name, label]) =>
      h("a", { href: `${base}/${name}`, id: `tab-link-${name}`, class: name === entry[0] ? "active" : "" }, label))),
    panel,
  );
  try {
    await entry[2](page, panel);
  } catch (error) {
    context.showError(error.message);
  }
}

function nodeStatus(node) {
  if (node.online) return h("span", { class: "online" }, "online");
  return h("span", { class: "muted" }, `last seen ${formatTime(node.last_seen_at)}`);
}

async function renderNodes(page, panel) {
  const nodes = await page.api.get(`${page.path}/nodes`);
  const editable = can(page.role, "edit_nodes");
  const rows = nodes.map((node) => [
    node.hostname,
    node.ip,
    tags(node.groups),
    node.agent_version || "unknown",
    nodeStatus(node),
    node.os || "unknown",
    node.error ? h("span", { class: "error" }, node.error) : "",
    editable ? nodeActions(page, node) : "",
  ]);
  const children = [
    h("h2", {}, "Nodes"),
    table(["Hostname", "IP", "Groups", "Version", "Status", "OS", "Error", ""], rows,
      "No node yet. See Connect a device."),
  ];
  if (editable) children.push(await addNodeForm(page, nodes));
  replaceChildren(panel, ...children);
}

function nodeActions(page, node) {
  const nodePath = `${page.path}/nodes/${encodeURIComponent(node.id)}`;
  return [
    h("button", {
      class: "secondary edit-groups",
      onclick: () => {
        const text = prompt(`Groups of ${node.hostname} (separated by spaces or commas)`, node.groups.join(", "));
        if (text !== null) act(page, () => page.api.patch(nodePath, { groups: splitList(text) }));
      },
    }, "Edit groups"),
    h("button", {
      class: "danger delete-node",
      onclick: () => {
        if (confirm(`Remove node ${node.hostname} from this network?`)) act(page, () => page.api.delete(nodePath));
      },
    }, "Remove"),
  ];
}

async function addNodeForm(page, nodes) {
  const devices = await page.api.get("/devices");
  const present = new Set(nodes.map((node) => node.device_id));
  const free = devices.filter((device) => !present.has(device.id));
  if (free.length === 0) {
    return h("p", { class: "muted" }, "Devices you pair with netsody login can be added here.");
  }
  return h("div", {}, h("h3", {}, "Add one of your devices"), inlineForm(
    [
      ["device_id", "Device", { options: free.map((device) => [device.id, `${device.hostname} (${device.os})`]) }],
      ["groups", "Groups", { placeholder: "servers, linux" }],
    ],
    "Add node",
    (values) => act(page, () => page.api.post(`${page.path}/nodes`, {
      device_id: values.device_id, groups: splitList(values.groups),
    })),
  ));
}

async function renderMembers(page, panel) {
  const members = await page.api.get(`${page.path}/members`);
  const manage = can(page.role, "manage_users");
  const rows = members.map((member) => [
    member.user.email,
    member.user.name,
    member.role,
    tags(member.default_groups),
    manage && member.role !== "owner" ? memberActions(page, member) : "",
  ]);
  const children = [h("h2", {}, "Members"), table(["Email", "Name", "Role", "Default groups", ""], rows)];
  if (manage) {
    children.push(h("h3", {}, "Add a member"), h("p", { class: "muted" },
      "The user must have signed in to Netsody once."), inlineForm(
      [
        ["email", "Email", { type: "email", required: true }],
        ["role", "Role", { options: [["member", "Member"], ["editor", "Editor"], ["admin", "Admin"]] }],
        ["default_groups", "Default groups", { placeholder: "laptops" }],
      ],
      "Add member",
      (values) => act(page, () => page.api.post(`${page.path}/members`, {
        email: values.email, role: values.role, default_groups: splitList(values.default_groups),
      })),
      { id: "add-member" },
    ));
  }
  replaceChildren(panel, ...children);
}

function memberActions(page, member) {
  const memberPath = `${page.path}/members/${encodeURIComponent(member.user.id)}`;
  const buttons = [
    h("button", {
      class: "secondary change-role",
      onclick: () => {
        const role = prompt(`Role of ${member.user.email}: admin, editor or member`, member.role);
        if (role !== null) act(page, () => page.api.patch(memberPath, { role: role.trim() }));
      },
    }, "Change role"),
    h("button", {
      class: "secondary edit-default-groups",
      onclick: () => {
        const text = prompt(`Default groups of ${member.user.email}`, member.default_groups.join(", "));
        if (text !== null) act(page, () => page.api.patch(memberPath, { default_groups: splitList(text) }));
      },
    }, "Default groups"),
    h("button", {
      class: "danger remove-member",
      onclick: () => {
        if (confirm(`Remove ${member.user.email} from this network?`)) act(page, () => page.api.delete(memberPath));
      },
    }, "Remove"),
  ];
  if (can(page.role, "transfer_ownership")) {
    buttons.push(h("button", {
      class: "danger transfer-ownership",
      onclick: () => {
        if (confirm(`Make ${member.user.email} the Owner? You become an Admin.`)) {
          act(page, () => page.api.post(`${page.path}/transfer`, { user_id: member.user.id }));
        }
      },
    }, "Make owner"));
  }
  return buttons;
}

async function renderGroups(page, panel) {
  const groups = await page.api.get(`${page.path}/groups`);
  const rows = groups.map((group) => [group.name, String(group.nodes), String(group.policies), String(group.resources)]);
  replaceChildren(
    panel,
    h("h2", {}, "Groups"),
    h("p", { class: "muted" }, "Groups exist where they are used: on nodes, in policies and on resources."),
    table(["Group", "Nodes", "Policies", "Resources"], rows),
  );
}

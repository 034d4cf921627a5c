// Network tabs about access: policies, resources, join keys, invitations, and the panel with the
// commands that connect a device.

import { formatTime, h, inlineForm, replaceChildren, splitList, table, tags } from "./dom.js";
import { act } from "./api.js";
import { can } from "./permissions.js";

// Parse "tcp:22,443 udp:53 icmp" into API rules. A protocol without ports allows all its ports.
export function parseRules(text) {
  return splitList(text.replace(/,/g, "+")).map((entry) => {
    const [protocol, ports = ""] = entry.split(":");
    return {
      protocol: protocol.toLowerCase(),
      ports: ports.split("+").filter(Boolean).map((port) => (/^\d+$/.test(port) ? Number(port) : port)),
    };
  });
}

function formatRules(rules) {
  if (rules.length === 0) return "all traffic";
  return rules.map((rule) => (rule.ports.length ? `${rule.protocol} ${rule.ports.join(", ")}` : `${rule.protocol} (all ports)`)).join("; ");
}

function named(ids, byId) {
  return ids.map((id) => byId.get(id) ?? id);
}

export async function renderPolicies(page, panel) {
  const [policies, nodes, resources] = await Promise.all([
    page.api.get(`${page.path}/policies`),
    page.api.get(`${page.path}/nodes`),
    page.api.get(`${page.path}/resources`),
  ]);
  const nodeNames = new Map(nodes.map((node) => [node.id, node.hostname]));
  const resourceNames = new Map(resources.map((resource) => [resource.id, resource.name || resource.dest]));
  const editable = can(page.role, "edit_policies");
  const rows = policies.map((policy) => [
    policy.name || h("span", { class: "muted" }, "unnamed"),
    tags([...policy.sources.groups, ...named(policy.sources.nodes, nodeNames)]),
    tags([
      ...policy.destinations.groups,
      ...named(policy.destinations.nodes, nodeNames),
      ...named(policy.destinations.resources, resourceNames),
    ]),
    formatRules(policy.rules),
    editable ? h("button", {
      class: "danger delete-policy",
      onclick: () => {
        if (confirm(`Delete policy ${policy.name || policy.id}?`)) {
          act(page, () => page.api.delete(`${page.path}/policies/${encodeURIComponent(policy.id)}`));
        }
      },
    }, "Delete") : "",
  ]);
  const children = [
    h("h2", {}, "Policies"),
    h("p", { class: "muted" }, "Each policy lets its source groups and nodes reach its destinations. " +
      "Traffic no policy allows is dropped."),
    table(["Name", "Sources", "Destinations", "Rules", ""], rows, "No policy: no traffic is allowed."),
  ];
  if (editable) {
    children.push(h("h3", {}, "New policy"), inlineForm(
      [
        ["name", "Name", { placeholder: "ssh to servers" }],
        ["sources", "Source groups", { required: true, placeholder: "admins" }],
        ["destinations", "Destination groups", { required: true, placeholder: "servers" }],
        ["rules", "Rules (empty: all traffic)", { placeholder: "tcp:22,443 icmp" }],
      ],
      "Create policy",
      (values) => act(page, () => page.api.post(`${page.path}/policies`, {
        name: values.name,
        sources: { groups: splitList(values.sources) },
        destinations: { groups: splitList(values.destinations) },
        rules: parseRules(values.rules),
      })),
      { id: "create-policy" },
    ));
  }
  replaceChildren(panel, ...children);
}

export async function renderResources(page, panel) {
  const [resources, nodes] = await Promise.all([
    page.api.get(`${page.path}/resources`),
    page.api.get(`${page.path}/nodes`),
  ]);
  const nodeNames = new Map(nodes.map((node) => [node.id, node.hostname]));
  const editable = can(page.role, "edit_resources");
  const rows = resources.map((resource) => [
    resource.name,
    resource.dest,
    nodeNames.get(resource.gateway_node_id) ?? resource.gateway_node_id,
    tags(resource.groups),
    editable ? h("button", {
      class: "danger delete-resource",
      onclick: () => {
        if (confirm(`Delete resource ${resource.name || resource.dest}?`)) {
          act(page, () => page.api.delete(`${page.path}/resources/${encodeURIComponent(resource.id)}`));
        }
      },
    }, "Delete") : "",
  ]);
  const children = [
    h("h2", {}, "Resources"),
    h("p", { class: "muted" }, "Networks or domains outside the overlay, reached through a gateway node."),
    table(["Name", "Destination", "Gateway", "Groups", ""], rows),
  ];
  if (editable && nodes.length > 0) {
    children.push(h("h3", {}, "New resource"), inlineForm(
      [
        ["name", "Name", { placeholder: "lab" }],
        ["dest", "Destination", { required: true, placeholder: "10.2.0.0/16 or *.lab.internal" }],
        ["gateway_node_id", "Gateway", { options: nodes.map((node) => [node.id, node.hostname]) }],
        ["groups", "Groups", { placeholder: "lab" }],
      ],
      "Create resource",
      (values) => act(page, () => page.api.post(`${page.path}/resources`, {
        name: values.name, dest: values.dest, gateway_node_id: values.gateway_node_id,
        groups: splitList(values.groups),
      })),
    ));
  }
  replaceChildren(panel, ...children);
}

export async function renderJoinKeys(page, panel, created = null) {
  const children = [h("h2", {}, "Join keys")];
  if (created) {
    const command = page.config.join_command.replace("<JOIN_KEY>", created.secret);
    children.push(h("div", { id: "join-key-created" },
      h("p", {}, `Join key ${created.name} created. Copy its secret now: it is shown only once.`),
      h("pre", { class: "secret", id: "join-key-secret" }, created.secret),
      h("p", {}, "A device joins with:"),
      h("pre", { class: "command", id: "join-command" }, command)));
  }
  // Roles without the manage_keys right still request the list, so the page shows the API's reason.
  const keys = await page.api.get(`${page.path}/join-keys`).catch((error) => {
    page.showError(error.message);
    return null;
  });
  if (keys === null) {
    replaceChildren(panel, ...children);
    return;
  }
  const rows = keys.map((key) => [
    key.name,
    h("code", {}, `${key.hint}…`),
    tags(key.groups),
    key.max_uses ? `${key.uses} of ${key.max_uses}` : String(key.uses),
    key.expires_at ? formatTime(key.expires_at) : "never",
    key.revoked_at ? `revoked ${formatTime(key.revoked_at)}` : h("button", {
      class: "danger revoke-key",
      onclick: () => {
        if (confirm(`Revoke join key ${key.name}?`)) {
          act(page, () => page.api.delete(`${page.path}/join-keys/${encodeURIComponent(key.id)}`));
        }
      },
    }, "Revoke"),
  ]);
  children.push(table(["Name", "Secret starts", "Groups", "Uses", "Expires", ""], rows));
  if (can(page.role, "manage_keys")) {
    children.push(h("h3", {}, "New join key"), inlineForm(
      [
        ["name", "Name", { required: true, placeholder: "build servers" }],
        ["groups", "Groups for joining nodes", { placeholder: "servers" }],
        ["max_uses", "Max uses (empty: unlimited)", { type: "number", min: 1 }],
        ["expires_at", "Expires (empty: never)", { type: "datetime-local" }],
      ],
      "Create join key",
      async (values) => {
        try {
          const key = await page.api.post(`${page.path}/join-keys`, {
            name: values.name,
            groups: splitList(values.groups),
            max_uses: values.max_uses ? Number(values.max_uses) : null,
            expires_at: values.expires_at ? new Date(values.expires_at).toISOString() : null,
          });
          page.clearNotice();
          await renderJoinKeys(page, panel, key);
        } catch (error) {
          page.showError(error.message);
        }
      },
      { id: "create-join-key" },
    ));
  }
  replaceChildren(panel, ...children);
}

export async function renderInvitations(page, panel) {
  const invitations = await page.api.get(`${page.path}/invitations`);
  const manage = can(page.role, "manage_users");
  const rows = invitations.map((invitation) => [
    invitation.email,
    invitation.role,
    formatTime(invitation.created_at),
    formatTime(invitation.expires_at),
    invitation.email_sent_at ? formatTime(invitation.email_sent_at) : "not yet",
    invitation.revoked_at ? `revoked ${formatTime(invitation.revoked_at)}` : manage ? h("button", {
      class: "danger revoke-invitation",
      onclick: () => act(page, () => page.api.delete(`${page.path}/invitations/${encodeURIComponent(invitation.id)}`)),
    }, "Revoke") : "",
  ]);
  const children = [h("h2", {}, "Invitations"), table(["Email", "Role", "Created", "Expires", "Email sent", ""], rows)];
  if (manage) {
    children.push(h("h3", {}, "Invite by email"), inlineForm(
      [
        ["email", "Email", { type: "email", required: true }],
        ["role", "Role", { options: [["member", "Member"], ["editor", "Editor"], ["admin", "Admin"]] }],
      ],
      "Send invitation",
      (values) => act(page, () => page.api.post(`${page.path}/invitations`, { email: values.email, role: values.role })),
    ));
  }
  replaceChildren(panel, ...children);
}

export async function renderConnect(page, panel) {
  const { config } = page;
  const children = [
    h("h2", {}, "Connect a device"),
    h("p", {}, "Install the Netsody agent, start it with netsody run (as root), then sign in:"),
    h("pre", { class: "command", id: "login-command" }, config.login_command),
    h("p", {}, "The command opens a browser sign-in. On a device without a browser, open ",
      config.device_authorization_url ? h("code", {}, config.device_authorization_url) : "the device sign-in page of your identity provider",
      " on another device and enter the code it prints."),
    h("p", {}, "After signing in, the device is paired with your account. An Owner, Admin or Editor " +
      "adds it to this network on the Nodes tab."),
    h("h3", {}, "Without a browser"),
    h("p", {}, "Create a join key on the Join keys tab, then run:"),
    h("pre", { class: "command", id: "join-command-template" }, config.join_command),
  ];
  replaceChildren(panel, ...children);
}

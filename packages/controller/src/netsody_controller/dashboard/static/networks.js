// The list of the user's networks: create, rename and delete.

import { h, inlineForm, replaceChildren, table } from "./dom.js";
import { can } from "./permissions.js";

export async function renderNetworks(context, main) {
  const { api } = context;
  const networks = await api.get("/networks");
  const reload = () => renderNetworks(context, main).catch((error) => context.showError(error.message));
  const create = inlineForm(
    [
      ["name", "Name", { required: true, maxlength: 63, placeholder: "office" }],
      ["subnet", "IPv4 subnet", { required: true, placeholder: "10.1.0.0/24" }],
    ],
    "Create network",
    async (values) => {
      try {
        await api.post("/networks", { name: values.name, subnet: values.subnet });
        context.clearNotice();
        await reload();
      } catch (error) {
        context.showError(error.message);
      }
    },
    { id: "create-network" },
  );
  const rows = networks.map((network) => [
    h("a", { href: `#/networks/${encodeURIComponent(network.id)}`, class: "network-link" }, network.name),
    network.subnet,
    network.role,
    network.owner.email,
    String(network.revision),
    networkActions(context, network, reload),
  ]);
  replaceChildren(
    main,
    h("h1", {}, "Networks"),
    table(["Name", "Subnet", "Your role", "Owner", "Revision", ""], rows, "You are in no network yet."),
    h("h2", {}, "New network"),
    create,
  );
}

function networkActions(context, network, reload) {
  const { api } = context;
  const path = `/networks/${encodeURIComponent(network.id)}`;
  const buttons = [];
  if (can(network.role, "edit_network")) {
    buttons.push(
      h("button", {
        class: "secondary rename-network",
        onclick: async () => {
          const name = prompt(`New name of network ${network.name}`, network.name);
          if (name === null) return;
          try {
            await api.patch(path, { name });
            await reload();
          } catch (error) {
            context.showError(error.message);
          }
        },
      }, "Rename"),
    );
  }
  if (can(network.role, "delete_network")) {
    buttons.push(
      h("button", {
        class: "danger delete-network",
        onclick: async () => {
          if (!confirm(`Delete network ${network.name} with all its nodes, policies and keys?`)) return;
          try {
            await api.delete(path);
            await reload();
          } catch (error) {
            context.showError(error.message);
          }
        },
      }, "Delete"),
    );
  }
  return buttons;
}

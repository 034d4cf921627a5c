// Entry point of the dashboard: load the configuration, finish or start the sign-in, route.

import { createApi } from "./api.js";
import { beginSignIn, completeSignIn, currentSession, forgetSession, signOut } from "./auth.js";
import { h, replaceChildren } from "./dom.js";
import { renderNetworks } from "./networks.js";
import { renderNetwork } from "./network.js";

const main = document.getElementById("main");
const account = document.getElementById("account");
const notice = document.getElementById("notice");

export function showError(message) {
  notice.className = "";
  notice.textContent = message;
  notice.hidden = false;
}

export function showInfo(message) {
  notice.className = "info";
  notice.textContent = message;
  notice.hidden = false;
}

function clearNotice() {
  notice.hidden = true;
  notice.textContent = "";
}

function renderSignIn(config) {
  replaceChildren(account);
  replaceChildren(
    main,
    h("h1", {}, "Sign in"),
    h("p", {}, "Sign in with your organization's identity provider to manage your networks."),
    h(
      "button",
      {
        id: "sign-in",
        onclick: () => beginSignIn(config, location.hash).catch((error) => showError(error.message)),
      },
      "Sign in",
    ),
  );
}

function renderAccount(config, me) {
  replaceChildren(
    account,
    h("span", { id: "me" }, me.email),
    h("button", { id: "sign-out", class: "secondary", onclick: () => signOut(config) }, "Sign out"),
  );
}

async function route(context) {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  try {
    if (parts[0] === "networks" && parts[1]) {
      await renderNetwork(context, main, decodeURIComponent(parts[1]), parts[2] ?? "nodes");
    } else {
      await renderNetworks(context, main);
    }
  } catch (error) {
    showError(error.message);
  }
}

async function start() {
  const response = await fetch("/dashboard/config.json", { cache: "no-store" });
  const config = await response.json();
  if (location.pathname === "/callback") {
    try {
      location.hash = await completeSignIn(config);
    } catch (error) {
      renderSignIn(config);
      showError(error.message);
      return;
    }
  }
  if (!currentSession()) {
    renderSignIn(config);
    return;
  }
  const api = createApi(
    config.api_base_url,
    () => currentSession()?.access_token ?? "",
    (detail) => {
      forgetSession();
      renderSignIn(config);
      showError(`${detail}. Sign in again.`);
    },
  );
  const context = { config, api, me: null, showError, showInfo, clearNotice };
  context.me = await api.get("/me");
  renderAccount(config, context.me);
  window.addEventListener("hashchange", () => {
    clearNotice();
    route(context);
  });
  await route(context);
}

start().catch((error) => showError(error.message));

// OIDC sign-in with the authorization code flow and PKCE (RFC 7636, S256) as a public client.
//
// SECURITY: tokens live only in sessionStorage (one tab, gone when it closes) and travel only in
// Authorization headers and the token request body, never in a URL. The state parameter ties a
// callback to the sign-in this tab started, and the nonce ties the ID token to it.

const TOKENS_KEY = "netsody.tokens";
const PENDING_KEY = "netsody.pending";
const EXPIRY_MARGIN_MS = 30_000;

function base64url(bytes) {
  let text = "";
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomToken(length = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(length)));
}

async function s256(text) {
  return base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

function decodeJwtPayload(token) {
  const payload = token.split(".")[1] ?? "";
  const padded = payload.replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(padded), (char) => char.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function redirectUri() {
  return `${location.origin}/callback`;
}

export async function discover(authority) {
  const url = `${authority}/.well-known/openid-configuration`;
  let response;
  try {
    response = await fetch(url, { cache: "no-store" });
  } catch (error) {
    throw new Error(`The OIDC discovery document at ${url} is unreachable: ${error.message}`);
  }
  if (!response.ok) {
    throw new Error(`The OIDC discovery document at ${url} returned HTTP ${response.status}`);
  }
  const metadata = await response.json();
  if (metadata.issuer?.replace(/\/$/, "") !== authority.replace(/\/$/, "")) {
    throw new Error(
      `The OIDC issuer ${metadata.issuer} differs from NETSODY_DASHBOARD_OIDC_AUTHORITY ` +
        `${authority}; set the variable to the issuer URL`,
    );
  }
  return metadata;
}

export async function beginSignIn(config, returnTo) {
  const metadata = await discover(config.oidc_authority);
  const pending = {
    state: randomToken(),
    nonce: randomToken(),
    verifier: randomToken(48),
    returnTo,
  };
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  const url = new URL(metadata.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: config.oidc_client_id,
    redirect_uri: redirectUri(),
    scope: config.oidc_scope,
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: await s256(pending.verifier),
    code_challenge_method: "S256",
  }).toString();
  location.assign(url.toString());
}

// Finish the sign-in on /callback; return the hash route to go back to.
export async function completeSignIn(config) {
  const params = new URLSearchParams(location.search);
  const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) ?? "null");
  sessionStorage.removeItem(PENDING_KEY);
  // The authorization code must not stay in the address bar or the history.
  history.replaceState(null, "", "/");
  if (!pending || params.get("state") !== pending.state) {
    throw new Error("The sign-in response does not belong to a sign-in started here; sign in again");
  }
  if (params.has("error")) {
    const reason = params.get("error_description") || params.get("error");
    throw new Error(`The identity provider did not sign you in: ${reason}`);
  }
  const metadata = await discover(config.oidc_authority);
  if (params.has("iss") && params.get("iss") !== metadata.issuer) {
    throw new Error(`The sign-in response comes from issuer ${params.get("iss")}, not ${metadata.issuer}`);
  }
  const tokens = await exchangeCode(metadata, config, params.get("code") ?? "", pending.verifier);
  checkIdToken(tokens.id_token, metadata.issuer, config.oidc_client_id, pending.nonce);
  const expiresIn = Number(tokens.expires_in ?? 300);
  sessionStorage.setItem(
    TOKENS_KEY,
    JSON.stringify({ access_token: tokens.access_token, expires_at: Date.now() + expiresIn * 1000 }),
  );
  return pending.returnTo || "#/";
}

async function exchangeCode(metadata, config, code, verifier) {
  const response = await fetch(metadata.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code,
      redirect_uri: redirectUri(),
      client_id: config.oidc_client_id,
      code_verifier: verifier,
    }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok || !body.access_token) {
    const reason = body.error_description || body.error || `HTTP ${response.status}`;
    throw new Error(`The token request to the identity provider failed: ${reason}`);
  }
  return body;
}

// SECURITY: the ID token comes straight from the token endpoint, never through a URL, so only its
// claims are checked here and not its signature. The API checks each access token's signature.
function checkIdToken(idToken, issuer, clientId, nonce) {
  if (!idToken) {
    throw new Error("The identity provider returned no ID token; include openid in NETSODY_DASHBOARD_OIDC_SCOPE");
  }
  const claims = decodeJwtPayload(idToken);
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (claims.iss !== issuer || !audiences.includes(clientId)) {
    throw new Error("The ID token was issued by another provider or for another client; sign in again");
  }
  if (claims.nonce !== nonce) {
    throw new Error("The ID token does not belong to this sign-in (nonce mismatch); sign in again");
  }
}

// Return the stored session, or null when there is none or its access token has expired.
export function currentSession() {
  const session = JSON.parse(sessionStorage.getItem(TOKENS_KEY) ?? "null");
  if (!session || session.expires_at - EXPIRY_MARGIN_MS < Date.now()) {
    sessionStorage.removeItem(TOKENS_KEY);
    return null;
  }
  return session;
}

export function forgetSession() {
  sessionStorage.removeItem(TOKENS_KEY);
}

export async function signOut(config) {
  forgetSession();
  let endSession = null;
  try {
    endSession = (await discover(config.oidc_authority)).end_session_endpoint ?? null;
  } catch {
    endSession = null;
  }
  if (!endSession) {
    location.assign("/");
    return;
  }
  // RP-initiated logout without id_token_hint, so no token appears in the URL.
  const url = new URL(endSession);
  url.search = new URLSearchParams({
    client_id: config.oidc_client_id,
    post_logout_redirect_uri: `${location.origin}/`,
  }).toString();
  location.assign(url.toString());
}

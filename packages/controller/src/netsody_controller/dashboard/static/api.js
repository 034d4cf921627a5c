// Calls to the controller API with the signed-in user's bearer token.

export class ApiError extends Error {
  constructor(status, detail, code) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

export function createApi(baseUrl, accessToken, onUnauthenticated) {
  async function request(method, path, body) {
    const headers = { Accept: "application/json", Authorization: `Bearer ${accessToken()}` };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(`${baseUrl}${path}`, init);
    } catch (error) {
      throw new ApiError(0, `The controller API at ${baseUrl} is unreachable: ${error.message}`, "");
    }
    if (response.status === 204) return null;
    const payload = await response.json().catch(() => null);
    if (!response.ok) {
      // Every API error carries the envelope {"detail", "code"}, and the page shows the detail.
      const detail = payload?.detail ?? `The API returned HTTP ${response.status}`;
      if (response.status === 401) onUnauthenticated(detail);
      throw new ApiError(response.status, detail, payload?.code ?? "");
    }
    return payload;
  }

  return {
    get: (path) => request("GET", path),
    post: (path, body = {}) => request("POST", path, body),
    patch: (path, body) => request("PATCH", path, body),
    delete: (path) => request("DELETE", path),
  };
}

// Run an API call from a button or form, then reload the tab, or show the error detail.
export async function act(page, call) {
  try {
    const result = await call();
    page.clearNotice();
    await page.reload();
    return result;
  } catch (error) {
    page.showError(error.message);
    return undefined;
  }
}

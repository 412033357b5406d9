// A small fleetml API client for Node.js >= 18: plain fetch, no dependencies.
//
//   import { connect, predictions } from "./fleetml.mjs";
//   const fleet = connect({ url: "http://127.0.0.1:8000", key: process.env.FLEETML_KEY });
//   const atRisk = await predictions(fleet, { atRisk: true });
//
// Every function takes the connection from connect() first. An error answer (4xx/5xx) throws a
// FleetmlError with the server's status, detail and list of bad items (errors).

/** An error answer of the API: `status`, `detail` (what was wrong) and `errors` (bad items). */
export class FleetmlError extends Error {
  constructor(status, detail, errors = []) {
    super(`HTTP ${status}: ${detail}`);
    this.name = "FleetmlError";
    this.status = status;
    this.detail = detail;
    this.errors = errors;
  }
}

/**
 * A connection: where the API answers and the API key to send as "Authorization: Bearer KEY".
 * @param {{url: string, key: string, timeoutMs?: number}} options
 */
export function connect({ url, key, timeoutMs = 10_000 }) {
  if (!url || !key) {
    throw new Error(
      "connect() needs url (e.g. http://127.0.0.1:8000) and key (fleetml keys create)",
    );
  }
  return { url: url.replace(/\/+$/, ""), key, timeoutMs };
}

function queryString(params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined || value === null) continue;
    for (const item of Array.isArray(value) ? value : [value]) query.append(name, String(item));
  }
  const text = query.toString();
  return text ? `?${text}` : "";
}

/** One request; the decoded JSON answer (null when empty), or a thrown FleetmlError. */
export async function request(conn, method, path, { query = {}, body } = {}) {
  const headers = { Authorization: `Bearer ${conn.key}`, Accept: "application/json" };
  const init = { method, headers, signal: AbortSignal.timeout(conn.timeoutMs) };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`${conn.url}${path}${queryString(query)}`, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const detail =
      typeof data?.detail === "string" ? data.detail : text.slice(0, 500) || response.statusText;
    throw new FleetmlError(response.status, detail, data?.errors ?? []);
  }
  return data;
}

/**
 * Store metric samples (POST /v1/metrics), all or nothing. A sample is
 * {account_id, ts (ISO-8601 or epoch seconds), values: {metric: number|null}}.
 * `register: true` registers unknown accounts instead of refusing the batch.
 */
export function postMetrics(conn, samples, { register = false } = {}) {
  return request(conn, "POST", "/v1/metrics", { query: { register }, body: { samples } });
}

/** Samples in a time range (GET /v1/metrics): {samples: [...], count}. */
export function readMetrics(conn, { accountIds, metrics, from, to } = {}) {
  return request(conn, "GET", "/v1/metrics", {
    query: { account_id: accountIds, metric: metrics, from, to },
  });
}

/**
 * Every page of the latest predictions (GET /v1/predictions), as they arrive.
 * Filters: group, accountIds, atRisk, isAnomaly; `pageSize` is the limit asked per page.
 */
export async function* predictionPages(
  conn,
  { group, accountIds, atRisk, isAnomaly, pageSize } = {},
) {
  let cursor;
  do {
    const page = await request(conn, "GET", "/v1/predictions", {
      query: {
        group,
        account_id: accountIds,
        at_risk: atRisk,
        is_anomaly: isAnomaly,
        limit: pageSize,
        cursor,
      },
    });
    yield page;
    cursor = page.next_cursor;
  } while (cursor);
}

/** All latest predictions matching the filters of predictionPages(), every page followed. */
export async function predictions(conn, filters = {}) {
  const out = [];
  for await (const page of predictionPages(conn, filters)) out.push(...page.predictions);
  return out;
}

/** One account's latest prediction (GET /v1/predictions/{accountId}). */
export function prediction(conn, accountId) {
  return request(conn, "GET", `/v1/predictions/${encodeURIComponent(accountId)}`);
}

/**
 * Score one account now (POST /v1/predictions/{accountId}/score). `samples`, shaped as for
 * postMetrics(), are scored with the stored history without being stored.
 */
export function score(conn, accountId, samples = []) {
  return request(conn, "POST", `/v1/predictions/${encodeURIComponent(accountId)}/score`, {
    body: { samples },
  });
}

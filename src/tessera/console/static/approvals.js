// Approver console: WebAuthn registration, sign-in and one assertion per decision.
// No framework, no CDN. Every POST carries X-Tessera-Console (a CSRF guard: forces CORS).
"use strict";

const b64u = {
  toBuf(s) {
    const pad = "=".repeat((4 - (s.length % 4)) % 4);
    const bin = atob((s + pad).replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0)).buffer;
  },
  fromBuf(buf) {
    const bytes = new Uint8Array(buf);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
};

function say(text) { document.getElementById("status").textContent = text; }

async function api(path, body) {
  const resp = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: { "content-type": "application/json", "x-tessera-console": "1" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.detail || data.title || resp.statusText);
  return data;
}

function creationOptions(o) {
  o.challenge = b64u.toBuf(o.challenge);
  o.user.id = b64u.toBuf(o.user.id);
  (o.excludeCredentials || []).forEach((c) => { c.id = b64u.toBuf(c.id); });
  return o;
}

function requestOptions(o) {
  o.challenge = b64u.toBuf(o.challenge);
  (o.allowCredentials || []).forEach((c) => { c.id = b64u.toBuf(c.id); });
  return o;
}

function credentialJSON(cred) {
  const r = cred.response;
  const out = {
    id: cred.id, rawId: b64u.fromBuf(cred.rawId), type: cred.type,
    clientExtensionResults: cred.getClientExtensionResults(),
    response: { clientDataJSON: b64u.fromBuf(r.clientDataJSON) },
  };
  if (r.attestationObject) {
    out.response.attestationObject = b64u.fromBuf(r.attestationObject);
    out.response.transports = r.getTransports ? r.getTransports() : [];
  } else {
    out.response.authenticatorData = b64u.fromBuf(r.authenticatorData);
    out.response.signature = b64u.fromBuf(r.signature);
    if (r.userHandle) out.response.userHandle = b64u.fromBuf(r.userHandle);
  }
  return out;
}

async function enroll() {
  const token = document.body.dataset.enroll;
  try {
    const opts = await api(`/console/api/enroll/${token}/options`, {});
    const cred = await navigator.credentials.create({ publicKey: creationOptions(opts) });
    await api(`/console/api/enroll/${token}/verify`, credentialJSON(cred));
    say("Passkey registered. Opening your approvals…");
    window.location.assign("/console/approvals");
  } catch (e) { say(`Registration failed: ${e.message}`); }
}

async function login() {
  try {
    const opts = await api("/console/api/login/options", {});
    const cred = await navigator.credentials.get({ publicKey: requestOptions(opts) });
    await api("/console/api/login/verify", credentialJSON(cred));
    window.location.reload();
  } catch (e) { say(`Sign-in failed: ${e.message}`); }
}

async function devLogin() {
  try {
    await api("/console/api/dev-login", { user_token: document.getElementById("devtoken").value.trim() });
    window.location.reload();
  } catch (e) { say(`Sign-in failed: ${e.message}`); }
}

async function decide(article, decision) {
  const id = article.dataset.id;
  const note = article.querySelector(".note").value;
  try {
    let result;
    if (document.body.dataset.method === "dev") {
      result = await api(`/console/api/approvals/${id}/dev-decide`, { decision, note });
    } else {
      const opts = await api(`/console/api/approvals/${id}/options`, { decision, note });
      const cred = await navigator.credentials.get({ publicKey: requestOptions(opts.publicKey) });
      result = await api(`/console/api/approvals/${id}/decide`,
        { decision, note, nonce: opts.nonce, credential: credentialJSON(cred) });
    }
    say(`${id}: ${result.status}`);
    await refresh();
  } catch (e) { say(`Decision failed: ${e.message}`); }
}

async function refresh() {
  const list = document.getElementById("requests");
  if (!list) return;
  try {
    const data = await api("/console/api/approvals");
    document.body.dataset.method = data.method;
    if (list.dataset.sig !== data.signature) { // keep a half-typed note until something changes
      list.dataset.sig = data.signature;
      list.innerHTML = data.html;
    }
  } catch (e) { say(`Refresh failed: ${e.message}`); }
}

document.addEventListener("click", (ev) => {
  const t = ev.target;
  if (!(t instanceof HTMLElement)) return;
  if (t.id === "enroll") enroll();
  else if (t.id === "login") login();
  else if (t.id === "devlogin") devLogin();
  else if (t.id === "logout") api("/console/api/logout", {}).then(() => window.location.reload());
  else if (t.classList.contains("approve")) decide(t.closest("article"), "approve");
  else if (t.classList.contains("deny")) decide(t.closest("article"), "deny");
});

if (document.body.dataset.page === "approvals") {
  refresh();
  setInterval(refresh, 2000); // updates without reload
}

// Hash routing (#/files, #/jobs/<id>, ...): a reload lands on the same page. Each view renders into the main
// element and returns a cleanup function the router calls when the page changes.

const routes = [];
let current = null;
let guard = () => true;
let outlet = null;
let onRoute = () => {};

/** route("/jobs/:id", view, {public: true}) */
export function route(pattern, view, options = {}) {
  const names = [];
  const regex = pattern === "*" ? /^$/ : new RegExp(`^${pattern.replace(/:(\w+)/g, (_, n) => { names.push(n); return "([^/]+)"; })}$`);
  routes.push({ pattern, regex, names, view, public: Boolean(options.public), nav: options.nav || null });
}

export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  return { path: path || "/", query: new URLSearchParams(query), raw };
}

export function navigate(hash, { replace = false } = {}) {
  const target = hash.startsWith("#") ? hash : `#${hash}`;
  if (location.hash === target) {
    render();
  } else if (replace) {
    history.replaceState(null, "", target);
    render();
  } else {
    location.hash = target;
  }
}

/** The current page as a hash path (what `next` carries across a sign-in). */
export function currentPath() {
  return parseHash().raw;
}

export function start({ element, canEnter, afterRoute }) {
  outlet = element;
  guard = canEnter;
  onRoute = afterRoute || (() => {});
  window.addEventListener("hashchange", render);
  render();
}

async function render() {
  const { path, query, raw } = parseHash();
  let match = null;
  let params = {};
  for (const r of routes) {
    const m = r.regex.exec(path);
    if (m) {
      match = r;
      params = Object.fromEntries(r.names.map((n, i) => [n, decodeURIComponent(m[i + 1])]));
      break;
    }
  }
  if (!match) match = routes.find((r) => r.pattern === "*");
  const redirect = guard(match, raw);
  if (redirect) {
    navigate(redirect, { replace: true });
    return;
  }
  if (current && current.cleanup) {
    try { current.cleanup(); } catch (err) { console.error(err); }
  }
  const token = {};
  current = { token, cleanup: null };
  outlet.replaceChildren();
  outlet.setAttribute("aria-busy", "true");
  onRoute(match, params);
  try {
    const cleanup = await match.view(outlet, params, query, () => current.token === token);
    if (current.token === token) current.cleanup = cleanup || null;
    else if (cleanup) cleanup();
  } catch (err) {
    console.error(err);
  } finally {
    if (current.token === token) outlet.removeAttribute("aria-busy");
  }
  const heading = outlet.querySelector("h1");
  if (heading && !outlet.contains(document.activeElement)) heading.focus({ preventScroll: true });
}

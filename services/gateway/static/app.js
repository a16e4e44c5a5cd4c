// The dashboard's entry: the shell (navigation, live indicator), the routes, and the session at boot.

import { setExpiredHandler } from "./api.js";
import { h, svg, replace } from "./dom.js";
import { currentPath, navigate, parseHash, route, start } from "./router.js";
import { csrfToken, currentUser, isSignedIn, onSessionChange, renew } from "./session.js";
import * as live from "./sse.js";
import { emptyState, pageHeader, toast } from "./ui.js";
import { accountView } from "./views-account.js";
import { authView, setGoogleError } from "./views-auth.js";
import { deploymentsView } from "./views-deployments.js";
import { evaluationView, evaluationsView } from "./views-evaluations.js";
import { fileView, filesView } from "./views-files.js";
import { jobView, jobsView } from "./views-jobs.js";
import { playgroundView } from "./views-playground.js";
import { trainView } from "./views-train.js";

const ICONS = {
  files: "M4 4h10l6 6v10a0 0 0 0 1 0 0H4z M14 4v6h6",
  train: "M12 3v4 M12 17v4 M3 12h4 M17 12h4 M6 6l2.5 2.5 M15.5 15.5 18 18 M6 18l2.5-2.5 M15.5 8.5 18 6 M12 9a3 3 0 1 0 0 6a3 3 0 1 0 0-6",
  jobs: "M4 19V9 M10 19V5 M16 19v-7 M22 19H2",
  playground: "M4 5h16v11H9l-5 4z M8 9h8 M8 12h5",
  evaluations: "M9 11l2 2l4-4 M5 4h14v16H5z",
  deployments: "M4 5h16v5H4z M4 14h16v5H4z M7.5 7.5h.01 M7.5 16.5h.01",
  account: "M12 12a4 4 0 1 0 0-8a4 4 0 0 0 0 8z M4 21a8 8 0 0 1 16 0",
};
const NAV = [["files", "Data", "#/files"], ["train", "Train", "#/train"], ["jobs", "Jobs", "#/jobs"],
  ["playground", "Playground", "#/playground"], ["evaluations", "Evaluations", "#/evaluations"],
  ["deployments", "Deployments", "#/deployments"], ["account", "Account", "#/account"]];

function icon(name) {
  return svg("svg", { class: "icon", viewBox: "0 0 24 24", "aria-hidden": "true", focusable: "false" },
    svg("path", { d: ICONS[name] }));
}

function buildShell() {
  const links = NAV.map(([key, label, href]) => h("li", h("a", { class: "nav-link", href, "data-nav": key }, icon(key), h("span", label))));
  const liveDot = h("span", { class: "live-dot", "aria-hidden": "true" });
  const liveText = h("span", { class: "live-text" }, "Offline");
  const userEmail = h("span", { class: "user-email" });
  const menu = h("button", { type: "button", class: "menu-btn", "aria-expanded": "false", "aria-controls": "sidebar" },
    h("span", { class: "sr-only" }, "Menu"), h("span", { class: "menu-bars", "aria-hidden": "true" }));
  const sidebar = h("aside", { class: "sidebar", id: "sidebar" }, h("div", { class: "sidebar-inner" },
    h("a", { class: "brand", href: "#/jobs" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), "LLM Tuner"),
    h("nav", { "aria-label": "Main" }, h("ul", { class: "nav" }, links)),
    h("div", { class: "sidebar-foot" },
      h("div", { class: "live", title: "Live updates" }, liveDot, liveText),
      userEmail)));
  const topbar = h("header", { class: "topbar" },
    h("a", { class: "brand", href: "#/jobs" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), "LLM Tuner"), menu);
  const main = h("main", { id: "main", class: "main", tabindex: "-1" });
  const skip = h("button", { type: "button", class: "skip-link" }, "Skip to content");
  skip.addEventListener("click", () => main.focus());
  menu.addEventListener("click", () => {
    const open = document.body.classList.toggle("nav-open");
    menu.setAttribute("aria-expanded", String(open));
  });
  sidebar.addEventListener("click", (ev) => {
    if (ev.target.closest("a")) { document.body.classList.remove("nav-open"); menu.setAttribute("aria-expanded", "false"); }
  });
  const app = document.getElementById("app");
  replace(app, skip, topbar, sidebar, main);

  const showLive = (status) => {
    liveDot.dataset.state = status;
    liveText.textContent = { live: "Live", connecting: "Connecting…", offline: "Auto-refresh" }[status] || status;
  };
  live.on("status", showLive);
  showLive(live.liveStatus());
  const showUser = () => { const u = currentUser(); userEmail.textContent = u ? u.email : ""; };
  onSessionChange(showUser);
  return { main, showUser };
}

function notFound(main) {
  main.append(pageHeader("Page not found"), emptyState("There is nothing here", "The address may be mistyped.",
    h("a", { class: "btn btn-secondary", href: "#/jobs" }, "Go to jobs")));
}

function registerRoutes() {
  route("/signin", (m, p, q) => authView(m, p, q, "signin"), { public: true });
  route("/signup", (m, p, q) => authView(m, p, q, "signup"), { public: true });
  route("/files", filesView, { nav: "files" });
  route("/files/:id", fileView, { nav: "files" });
  route("/train", trainView, { nav: "train" });
  route("/jobs", jobsView, { nav: "jobs" });
  route("/jobs/:id", jobView, { nav: "jobs" });
  route("/playground", playgroundView, { nav: "playground" });
  route("/evaluations", evaluationsView, { nav: "evaluations" });
  route("/evaluations/:id", evaluationView, { nav: "evaluations" });
  route("/deployments", deploymentsView, { nav: "deployments" });
  route("/account", accountView, { nav: "account" });
  route("/", () => {}, { nav: null });
  route("*", notFound);
}

function guard(match, raw) {
  if (match.pattern === "/") return isSignedIn() ? "/jobs" : "/signin";
  if (!match.public && !isSignedIn()) return `/signin?next=${encodeURIComponent(raw)}`;
  if (match.public && isSignedIn()) {
    const next = parseHash().query.get("next");
    return next && next.startsWith("/") && !next.startsWith("//") ? next : "/jobs";
  }
  return null;
}

function afterRoute(match) {
  document.body.classList.toggle("is-auth", Boolean(match && match.public));
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (match && link.dataset.nav === match.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const name = match && match.nav ? NAV.find((n) => n[0] === match.nav) : null;
  document.title = name ? `${name[1]} · LLM Tuner` : "LLM Tuner";
}

/** Paths the server sends people to (/login after a failed Google sign-in, /dashboard after a good one). */
function adoptServerPath() {
  const url = new URL(location.href);
  if (url.pathname === "/login") {
    const error = url.searchParams.get("error");
    if (error) setGoogleError(error);
    history.replaceState(null, "", "/#/signin");
  } else if (url.pathname === "/dashboard") {
    history.replaceState(null, "", `/${location.hash || "#/jobs"}`);
  }
}

async function boot() {
  adoptServerPath();
  const { main } = buildShell();
  registerRoutes();
  if (csrfToken()) await renew(); // a session cookie from an earlier visit (or a Google sign-in)
  onSessionChange(() => {
    if (isSignedIn()) live.start();
    else live.stop();
  });
  if (isSignedIn()) live.start();
  setExpiredHandler(() => {
    const path = currentPath();
    if (path.startsWith("/signin") || path.startsWith("/signup")) return;
    toast("Your session has ended. Sign in again to continue.", "info");
    navigate(`/signin?next=${encodeURIComponent(path)}`, { replace: true });
  });
  start({ element: main, canEnter: guard, afterRoute });
}

boot();

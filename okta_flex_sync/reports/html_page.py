"""The HTML drift report: one self-contained page from `templates/report.html.j2` with `report.css` and `report.js` inlined, script-inert under a strict Content-Security-Policy."""
from __future__ import annotations

import base64
import functools
import hashlib
import html
import importlib.resources
import json
import math
import re
from collections.abc import Mapping, Sequence

import jinja2
from markupsafe import Markup

from okta_flex_sync.models.records import FINDING_KINDS, SEVERITIES, SEVERITY_RANK
from okta_flex_sync.reports.document import (
    DEFAULT_MAX_CHANGES,
    HTML_CELL_CHARS,
    HTML_HIGH_ROWS,
    TREND_ROLES,
    TREND_RUNS,
    mode_meaning,
    printable,
    severity_counts,
    truncate,
)
from okta_flex_sync.reports.guide import guide_for
from okta_flex_sync.reports.links import okta_user_url, twilio_worker_url

KIND_COLORS = {
    "privilege_escalation": "#b91c1c", "deactivated_user_has_worker": "#ea580c",
    "roles_mismatch": "#d97706", "invalid_role": "#a16207", "orphan_worker": "#7c3aed",
    "unparseable_attributes": "#db2777", "full_name_mismatch": "#2563eb",
    "email_mismatch": "#0891b2", "image_url_mismatch": "#059669", "missing_worker": "#64748b",
}


ROLE_COLORS = {"admin": "#b91c1c", "supervisor": "#d97706", "agent": "#2563eb"}


OTHER_COLOR = "#9ca3af"


# Fields a row of the tables by kind does not show but a search should find.
_SEARCH_ONLY = ("okta_user_id", "app_username")


BRIEF_ROWS = 50  # rows of the new / resolved / high-severity tables


GROUP_ROWS = 2_000  # users and workers in the grouped view (each carries two console links)


@functools.cache
def _template():
    """The Jinja template, its CSS and its script, from the package (works from a wheel or a checkout)."""
    folder = importlib.resources.files("okta_flex_sync.reports") / "templates"
    env = jinja2.Environment(autoescape=True, trim_blocks=False, lstrip_blocks=False,
                             undefined=jinja2.StrictUndefined)
    template = env.from_string((folder / "report.html.j2").read_text(encoding="utf-8"))
    return template, (folder / "report.css").read_text(encoding="utf-8"), (folder / "report.js").read_text(encoding="utf-8")


def render_html(report: Mapping) -> str:
    """One self-contained, script-inert page: data escaped, CSP allows only our own script."""
    template, css, js = _template()
    script_hash = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
    csp = (f"default-src 'none'; script-src 'sha256-{script_hash}'; style-src 'unsafe-inline'; "
           "img-src 'none'; base-uri 'none'; form-action 'none'")
    return template.render(**_html_view(report), csp=csp, css=Markup(css), js=Markup(js)) + "\n"


def _html_view(report: Mapping) -> dict:
    """Everything the template shows, as plain values (the template escapes them)."""
    findings, resolved = report["findings"], report.get("resolved") or []
    delta = report.get("delta") or {"previous_run_id": None, "new": len(findings), "resolved": 0, "persisting": 0}
    links = report.get("links") or {}
    groups, group_of, groups_total = _groups(findings, links)
    rows = [_row(i, f, group_of) for i, f in enumerate(findings)]
    new_rows = [r for r in rows if r["status"] == "new"]
    high_rows = [r for r in rows if r["severity"] == "high"]
    for r in new_rows[:BRIEF_ROWS] + high_rows[:HTML_HIGH_ROWS]:  # the one-line detail, only where shown
        r["detail"] = _detail(findings[r["i"]], guide_for(r["kind"]).columns)
    sev = severity_counts
    new_sev = sev([f for f in findings if f.get("status") == "new"])
    delta_rows = [("New", new_sev, delta["new"]), ("Resolved", sev(resolved), len(resolved)),
                  ("Open", sev(findings), len(findings))]
    counts, skipped = report["counts"], report.get("skipped") or []
    kept = sum(1 for s in skipped if (s.get("reason") or "").startswith("kept, but"))
    population = [("Okta users", counts["okta_users"]), ("Flex-assigned users", counts["assigned_users"]),
                  ("TaskRouter workers", counts["workers"])]
    if skipped:
        population.append(("source records with problems", len(skipped)))
    steps = report.get("next_steps") or []
    step_by_kind = {s["kind"]: s for s in steps}
    return {
        "title": f"Drift report {truncate(printable(report['run_id']), 60)}",
        "run_id": _cell(report["run_id"], 80), "generated_at": printable(report["generated_at"]),
        "mode": _cell(report.get("mode", ""), 40), "mode_meaning": mode_meaning(report.get("mode", "")),
        "previous_run_id": _cell(delta.get("previous_run_id"), 80) if delta.get("previous_run_id") else None,
        "delta": delta, "new_high": new_sev.get("high", 0), "open_total": len(findings),
        "open_high": sev(findings).get("high", 0), "delta_rows": delta_rows, "severities": SEVERITIES,
        "population": population,
        "new_rows": new_rows[:BRIEF_ROWS], "new_total": len(new_rows),
        "resolved_rows": [_row(i, f, {}) | {"detail": _detail(f, guide_for(f["kind"]).columns)}
                          for i, f in enumerate(resolved[:BRIEF_ROWS])],
        "resolved_total": len(resolved),
        "high_rows": high_rows[:HTML_HIGH_ROWS], "high_total": len(high_rows),
        "steps": [s | {"color": KIND_COLORS.get(s["kind"], OTHER_COLOR), "remedy": _remedy_parts(s)}
                  for s in steps],
        "max_changes": _max_changes_note(report),
        "charts": _charts(report.get("trend") or []),
        "trend_rows": _trend_rows(report.get("trend") or []),
        "kinds": [{"kind": k, "anchor": _anchor(k), "count": n, "color": KIND_COLORS.get(k, OTHER_COLOR),
                   "new": step_by_kind.get(k, {}).get("new", 0), "meaning": guide_for(k).meaning}
                  for k, n in report["summary"].items()],
        "groups": groups, "groups_total": groups_total,
        "total": len(findings), "filters": Markup(_filters_html(report)),
        "sections": _sections(rows, step_by_kind),
        "problems": [{"source": _cell(s.get("source")), "id": _cell(s.get("id")),
                      "outcome": "kept, values cleaned" if (s.get("reason") or "").startswith("kept, but")
                      else "left out", "detail": _cell(_problem_detail(s.get("reason")))} for s in skipped],
        "problems_note": (f"{len(skipped) - kept} record(s) had no usable id and were left out of the run; "
                          f"{kept} were kept with the values that could not be read cleaned or dropped."),
        "data": Markup(json_for_script({"fields": list(_SEARCH_ONLY), "rows": [_search_only(f) for f in findings]})),
    }


def _search_only(f: Mapping) -> list[str]:
    """The ids a row does not show; the app username only when it is not the login shown."""
    app = f.get("app_username") or ""
    return [f.get("okta_user_id") or "", "" if app == f.get("login") else app]


def _max_changes_note(report: Mapping) -> int:
    return int(report.get("max_changes") or DEFAULT_MAX_CHANGES)


def _problem_detail(reason: str | None) -> str | None:
    if reason and reason.startswith("kept, but "):
        return reason[len("kept, but "):]
    return reason


def _anchor(kind: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", kind.lower())[:60] or "kind"


_NONE_CELL = {"text": "(none)", "title": None}  # an empty value: no roles, no name


def _cell(value, limit: int = HTML_CELL_CHARS) -> dict | None:
    """Display text, cut to `limit` with the full value as a tooltip; None shows as a dash."""
    if value is None:
        return None
    text = printable(str(value))
    if not text:
        return _NONE_CELL
    if len(text) <= limit:
        return {"text": text, "title": None}
    return {"text": truncate(text, limit), "title": text}


def _since(f: Mapping) -> str | None:
    if f.get("status") != "persisting":
        return None
    first = f.get("first_seen_at") or ""
    return printable(first[:10]) if len(first) >= 10 else None


def _detail(f: Mapping, columns) -> str:
    """The kind's columns as one line, e.g. "Roles Okta grants: agent · Elevated roles on the worker: admin"."""
    parts = [f"{header}: {truncate(printable(f[field]), 60) or _NONE_CELL['text']}" for header, field in columns
             if f.get(field) is not None]
    return " · ".join(parts)


def _row(i: int, f: Mapping, group_of: Mapping) -> dict:
    g = guide_for(f["kind"])
    user = f.get("login") or f.get("okta_user_id")
    return {"i": i, "kind": f["kind"], "severity": f["severity"], "status": f.get("status") or "new",
            "since": _since(f), "user": _cell(user), "worker": _cell(f.get("worker_sid"), 40),
            "group": group_of.get(_entity(f)), "detail": "",
            "cols": [_cell(f.get(field)) for _header, field in g.columns]}


def _sections(rows: list[dict], step_by_kind: Mapping) -> list[dict]:
    """Consecutive rows of one kind (findings are sorted by severity, then kind)."""
    sections: list[dict] = []
    for row in rows:
        if not sections or sections[-1]["kind"] != row["kind"]:
            g = guide_for(row["kind"])
            step = step_by_kind.get(row["kind"])
            sections.append({"kind": row["kind"], "anchor": _anchor(row["kind"]), "severity": row["severity"],
                             "color": KIND_COLORS.get(row["kind"], OTHER_COLOR), "meaning": g.meaning,
                             "remedy": _remedy_parts(step) if step else [(g.remedy, False)],
                             "headers": [h for h, _field in g.columns], "rows": []})
        sections[-1]["rows"].append(row)
    return sections


def _remedy_parts(step: Mapping) -> list[tuple[str, bool]]:
    """The remedy text split so its commands render as code."""
    text, parts = step["remedy"], []
    for cmd in step.get("commands") or []:
        before, found, text = text.partition(cmd)
        if not found:
            text = before
            continue
        parts += [(before, False), (cmd, True)]
    return [p for p in parts + [(text, False)] if p[0]]


def _entity(f: Mapping) -> tuple[str, str]:
    return (f.get("okta_user_id") or f.get("login") or "", f.get("worker_sid") or "")


def _groups(findings: Sequence[Mapping], links: Mapping) -> tuple[list[dict], dict, int]:
    """Findings grouped by (Okta user, worker), most severe and most findings first, capped."""
    by: dict[tuple[str, str], list[Mapping]] = {}
    for f in findings:
        by.setdefault(_entity(f), []).append(f)
    order = sorted(by, key=lambda k: (min(SEVERITY_RANK.get(f["severity"], 9) for f in by[k]), -len(by[k]), k))
    shown = order[:GROUP_ROWS]
    admin, workspace = links.get("okta_admin"), links.get("workspace_sid")
    groups, group_of = [], {}
    for n, key in enumerate(shown):
        fs = by[key]
        first = fs[0]
        anchor = f"g-{n}"
        group_of[key] = anchor
        user_id = first.get("okta_user_id")
        groups.append({
            "anchor": anchor, "user": _cell(first.get("login") or user_id or first.get("app_username")),
            "okta_user_id": _cell(user_id, 40) if user_id and first.get("login") else None,
            "okta_url": okta_user_url(admin, user_id), "worker": _cell(first.get("worker_sid"), 40),
            "twilio_url": twilio_worker_url(workspace, first.get("worker_sid")),
            "findings": [{"kind": f["kind"], "severity": f["severity"], "status": f.get("status"),
                          "detail": _detail(f, guide_for(f["kind"]).columns)} for f in fs],
        })
    return groups, group_of, len(order)


def _trend_rows(trend: Sequence[Mapping]) -> list[dict]:
    out = []
    for t in list(trend)[-TREND_RUNS:][::-1]:
        d = t.get("delta") or {}
        out.append({"run_id": _cell(t["run_id"], 40), "started": printable(_run_label(t)),
                    "total": sum(t["summary"].values()), "new": d.get("new", "—"), "resolved": d.get("resolved", "—")})
    return out


def _charts(trend: Sequence[Mapping]) -> dict | None:
    runs = list(trend)[-TREND_RUNS:]
    if not runs:
        return None
    kinds = [k for k in dict.fromkeys(k for r in runs for k in r["summary"]) if any(r["summary"][k] for r in runs)]
    return {"findings": Markup(findings_chart_svg(runs)), "roles": Markup(roles_chart_svg(runs)),
            "kind_legend": [(k, KIND_COLORS.get(k, OTHER_COLOR)) for k in kinds],
            "role_legend": list(ROLE_COLORS.items())}


def json_for_script(value) -> str:
    """JSON that cannot end a <script> element or break a JS string literal."""
    return (json.dumps(value, ensure_ascii=False)
            .replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _text(value) -> str:
    """Escaped for element text and quoted attribute values alike."""
    return html.escape(printable(str(value)), quote=True)


def _filters_html(report: Mapping) -> str:
    kinds = list(dict.fromkeys([*FINDING_KINDS, *report["summary"]]))
    severities = list(dict.fromkeys([*SEVERITIES, *(f["severity"] for f in report["findings"])]))
    kind_opts = "".join(f'<option value="{_text(k)}">{_text(k)}</option>' for k in kinds)
    sev_opts = "".join(f'<option value="{_text(s)}">{_text(s)}</option>' for s in severities)
    return ('<div class="filters" id="filters" hidden>'
            '<label>Filter <input id="f-q" type="search" placeholder="login, worker, value…" '
            'autocomplete="off"></label>'
            f'<label>Kind <select id="f-kind"><option value="">all kinds</option>{kind_opts}</select></label>'
            '<label>Severity <select id="f-severity"><option value="">all severities</option>'
            f"{sev_opts}</select></label>"
            "</div>")


_CHART_W, _CHART_H = 560, 220


_LABEL_PX = 76  # room for one "MM-DD HH:MM" axis label


_PAD_L, _PAD_R, _PAD_T, _PAD_B = 44, 12, 12, 40


def _nice_max(value: int) -> int:
    """A round axis maximum at or above value: 1, 2, 5, 10, 20, 50, …"""
    top = 1
    while top < value:
        top = _next_nice(top)
    return top


def _next_nice(top: int) -> int:
    digits = str(top)
    lead, zeros = int(digits[0]), len(digits) - 1
    return {1: 2, 2: 5, 5: 10}[lead] * 10 ** zeros


def _run_label(run: Mapping) -> str:
    started = run.get("started_at") or ""
    return started[5:16].replace("T", " ") if len(started) >= 16 else truncate(run["run_id"], 10)


def _axes_svg(y_max: int, runs: Sequence[Mapping], x_of) -> list[str]:
    plot_h = _CHART_H - _PAD_T - _PAD_B
    out = []
    for frac in (0, 0.5, 1):
        y = _PAD_T + plot_h * (1 - frac)
        out.append(f'<line x1="{_PAD_L}" x2="{_CHART_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(f'<text x="{_PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{round(y_max * frac)}</text>')
    slot = (_CHART_W - _PAD_L - _PAD_R) / len(runs)
    step = max(1, math.ceil(_LABEL_PX / slot))
    for i in range(0, len(runs), step):
        out.append(f'<text x="{x_of(i):.1f}" y="{_CHART_H - _PAD_B + 16}" text-anchor="middle">'
                   f"{_text(_run_label(runs[i]))}</text>")
    return out


def _svg(label: str, body: Sequence[str]) -> str:
    return (f'<svg role="img" aria-label="{_text(label)}" width="{_CHART_W}" height="{_CHART_H}" '
            f'viewBox="0 0 {_CHART_W} {_CHART_H}" font-size="11" fill="#6b7280">' + "".join(body) + "</svg>")


def findings_chart_svg(runs: Sequence[Mapping]) -> str:
    """Stacked bars: one per run, one segment per finding kind."""
    plot_w, plot_h = _CHART_W - _PAD_L - _PAD_R, _CHART_H - _PAD_T - _PAD_B
    y_max = _nice_max(max((sum(r["summary"].values()) for r in runs), default=0))
    slot = plot_w / len(runs)
    bar_w = max(min(slot * 0.7, 40), 2)

    def x_of(i: int) -> float:
        return _PAD_L + slot * (i + 0.5)

    body = _axes_svg(y_max, runs, x_of)
    for i, run in enumerate(runs):
        y = _PAD_T + plot_h
        for kind, n in run["summary"].items():
            if not n:
                continue
            h = plot_h * n / y_max
            y -= h
            tip = f"{run['run_id']} · {kind}: {n}"
            body.append(f'<rect x="{x_of(i) - bar_w / 2:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                        f'fill="{KIND_COLORS.get(kind, OTHER_COLOR)}"><title>{_text(tip)}</title></rect>')
    return _svg("Findings per run by kind", body)


def roles_chart_svg(runs: Sequence[Mapping]) -> str:
    """One line per Flex role: how many users held it in each run."""
    plot_w, plot_h = _CHART_W - _PAD_L - _PAD_R, _CHART_H - _PAD_T - _PAD_B
    y_max = _nice_max(max((r["roles"].get(role, 0) for r in runs for role in TREND_ROLES), default=0))
    slot = plot_w / len(runs)

    def x_of(i: int) -> float:
        return _PAD_L + slot * (i + 0.5)

    def y_of(n: int) -> float:
        return _PAD_T + plot_h * (1 - n / y_max)

    body = _axes_svg(y_max, runs, x_of)
    for role, color in ROLE_COLORS.items():
        points = [(x_of(i), y_of(r["roles"].get(role, 0))) for i, r in enumerate(runs)]
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                    + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
        for (x, y), run in zip(points, runs):
            tip = f"{run['run_id']} · {role}: {run['roles'].get(role, 0)}"
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"><title>{_text(tip)}</title></circle>')
    return _svg("Role holders per run", body)


"""The lock-in report and the vendor drill as a person reads them in a terminal."""

from __future__ import annotations

from typing import Any


def _pct(value: float) -> str:
    return f"{value:.1%}"


def render_lockin(report: dict[str, Any]) -> str:
    totals = report["totals"]
    lines = [
        f"lock-in {report.get('since')} .. {report.get('until')} (UTC days): {totals['requests']} requests, "
        f"{totals['tokens']} tokens, ${totals['cost_usd']:.6f}",
        f"vendor concentration (HHI, 0-10000): {report['hhi']['spend']:.0f} by spend, "
        f"{report['hhi']['tokens']:.0f} by tokens",
    ]
    for dim, shares in report["share"].items():
        parts = [
            f"{name} {_pct(s['request_share'])} of requests, {_pct(s['token_share'])} of tokens, "
            f"{_pct(s['spend_share'])} of spend"
            for name, s in shares.items()
        ]
        lines.append(f"by {dim}: " + ("; ".join(parts) or "no traffic"))
    lines.append("aliases:")
    for name, a in report["aliases"].items():
        flags = [
            "critical" if a["critical"] else "",
            "another vendor allowed" if a["other_vendor_allowed"] else "NO other vendor allowed",
            "self-hosted allowed" if a["self_hosted_allowed"] else "no self-hosted target allowed",
        ]
        lines.append(
            f"  {name}: {a['requests']} requests, dominant vendor {a['dominant_vendor']}, vendors "
            f"{', '.join(a['vendors']) or '-'}; stranded {_pct(a['stranded_share'])}; "
            + ", ".join(f for f in flags if f)
        )
        extras = a["provider_params"]
        if extras["requests"]:
            params = ", ".join(f"{p} ({v['vendor']}, {_pct(v['share'])})" for p, v in extras["params"].items())
            lines.append(f"    provider-specific parameters in {_pct(extras['share'])} of requests: {params}")
    facts = report["facts"]
    if facts["dropped"]:
        lines.append(f"note: {facts['dropped']} requests were over the daily cap of routing facts and are not judged")
    return "\n".join(lines)


def render_drill(report: dict[str, Any]) -> str:
    lines = [
        f"drill without {report['without']} ({', '.join(report['removed_deployments'])} removed), "
        f"{report.get('since')} .. {report.get('until')}: {report['refused']} of {report['requests']} recorded "
        "requests would be refused",
    ]
    for name, a in report["aliases"].items():
        if not a["requests"]:
            lines.append(f"  {name}: no recorded traffic")
            continue
        verdict = " FAILED (critical)" if a["failed"] else (" (critical)" if a["critical"] else "")
        lines.append(
            f"  {name}{verdict}: {a['refused']} of {a['requests']} refused ({_pct(a['stranded_share'])})"
        )
        for cause, n in a["refused_by"].items():
            lines.append(f"    refused by {cause}: {n}")
        moved = ", ".join(f"{d} {n}" for d, n in a["served_by_after"].items())
        if moved:
            lines.append(f"    the rest go to: {moved}")
        cost = a["cost"]
        if cost["requests"]:
            lines.append(
                f"    cost at policy prices: ${cost['before_usd']:.6f} -> ${cost['after_usd']:.6f} "
                f"({cost['change_usd']:+.6f}) over {cost['requests']} requests"
            )
        latency = a["latency"]
        if latency["requests"]:
            lines.append(
                f"    mean latency observed: {latency['mean_before_s']:.3f}s -> {latency['mean_after_s']:.3f}s "
                f"over {latency['requests']} requests"
            )
    lines.append("drill passed" if report["passed"] else f"drill FAILED: {', '.join(report['failed_aliases'])}")
    return "\n".join(lines)


def render_whatif(report: dict[str, Any]) -> str:
    lines = [f"what-if {report['policy']}, {report.get('since')} .. {report.get('until')} (UTC days): USD then -> now"]
    sections = [("at its prices, routed as recorded", report["prices"])]
    if report["routing"] is not None:
        sections.append(("at its prices and with its routing (recorded facts replayed)", report["routing"]))
    else:
        lines.append("(no routing facts recorded: routing is compared only when they exist)")
    for title, part in sections:
        lines.append(f"{title}:")
        for kind in ("aliases", "vendors"):
            lines.append(f"  by {kind[:-1] if kind == 'aliases' else 'vendor'}:")
            for name, s in part[kind].items():
                lines.append(f"    {name}: {_spend(s)}")
        lines.append(f"  total: {_spend(part['total'])}")
    return "\n".join(lines)


def _spend(s: dict[str, Any]) -> str:
    notes = [f"{s['requests']} requests"]
    if s["unpriced_requests"]:
        notes.append(f"{s['unpriced_requests']} unpriced (kept at the recorded cost)")
    if s["refused_requests"]:
        notes.append(f"{s['refused_requests']} refused")
    return f"${s['then_usd']:.6f} -> ${s['now_usd']:.6f} ({s['change_usd']:+.6f}); " + ", ".join(notes)


def render_shadow(report: dict[str, Any]) -> str:
    """`polyroute shadow report` as text: per alias and shadow target, results, agreement, latency and cost."""
    limits = report["thresholds"]
    lines = [
        f"shadow evaluation (passed = at least {limits['min_pairs']} compared pairs, mean similarity >= "
        f"{limits['min_similarity']}, no more errors than the primary)"
    ]
    if not report["aliases"]:
        lines.append("  no shadow copies yet")
    for alias, targets in report["aliases"].items():
        lines.append(f"alias {alias}")
        for target, t in targets.items():
            agree, lat, cost = t["agreement"], t["latency_s"], t["cost_usd"]
            counts = ", ".join(f"{k} {v}" for k, v in t["results"].items() if v)
            lines.append(f"  {target}: {'PASSED' if t['passed'] else 'not passed'} ({counts or 'nothing yet'})")
            if t["compared"]:
                lines.append(
                    f"    similarity {agree['similarity']:.3f}, exact {agree['exact']:.0%}, latency "
                    f"{lat['shadow']:.3f}s vs {lat['primary']:.3f}s, "
                    f"cost ${cost['shadow']:.6f} vs ${cost['primary']:.6f}"
                )
            if agree["json_valid"] is not None:
                lines.append(f"    JSON valid {agree['json_valid']:.0%}, same keys {agree['json_same_keys']:.0%}")
            if agree["tool_names"] is not None:
                lines.append(f"    tool names {agree['tool_names']:.0%}, arguments {agree['tool_arguments']:.0%}")
            errors = t["errors"]
            if errors["primary"] or errors["shadow"]:
                lines.append(f"    errors: primary {errors['primary']}, shadow {errors['shadow']} {errors['classes']}")
    return "\n".join(lines)

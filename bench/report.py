"""The benchmark table: one row per figure, its target beside it and by how much it is missed."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Row:
    section: str
    name: str
    value: float | None
    unit: str
    op: str = ""          # "<=", ">=", "==" or "" (no target)
    target: float | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        if not self.op or self.target is None:
            return None
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return False
        return {"<=": self.value <= self.target, ">=": self.value >= self.target,
                "==": self.value == self.target}[self.op]

    def miss(self) -> str:
        """'' when met or without a target, else by how much and how many times over/under."""
        if self.met is not False:
            return ""
        if self.value is None:
            return "not measured"
        assert self.target is not None
        gap = self.value - self.target
        if self.op == "<=":
            ratio = f" ({self.value / self.target:.1f}x the target)" if self.target else ""
            return f"+{fmt(gap, self.unit)}{ratio}"
        if self.op == ">=":
            share = f" ({100 * self.value / self.target:.0f}% of it)" if self.target else ""
            return f"-{fmt(-gap, self.unit)}{share}"
        return f"off by {fmt(abs(gap), self.unit)}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met, "miss": self.miss()}


def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit in ("req/s", "jobs/s", "submits/s", "tok/s", "jobs", "records", "images/s", "%", "x"):
        digits = 0 if abs(value) >= 100 or unit in ("jobs", "records") else (2 if unit == "x" else 1)
        text = f"{value:,.{digits}f}"
    elif unit == "us":
        text = f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    elif unit == "s":
        text = f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    else:  # ms and the rest
        text = f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {unit}".replace(" %", "%").replace(" x", "x")


def table(rows: list[Row]) -> str:
    head = ("figure", "value", "target", "missed by")
    body = [(r.name, fmt(r.value, r.unit), f"{r.op} {fmt(r.target, r.unit)}" if r.op else "",
             r.miss() + (f"  [{r.note}]" if r.note else "")) for r in rows]
    widths = [max(len(head[i]), *(len(b[i]) for b in body)) if body else len(head[i]) for i in range(3)]
    lines, section = [], None
    line = f"{head[0]:<{widths[0]}}  {head[1]:>{widths[1]}}  {head[2]:<{widths[2]}}  {head[3]}"
    lines += [line, "-" * min(120, len(line) + 30)]
    for row, cells in zip(rows, body):
        if row.section != section:
            section = row.section
            lines.append(f"[{section}]")
        lines.append(f"{cells[0]:<{widths[0]}}  {cells[1]:>{widths[1]}}  {cells[2]:<{widths[2]}}  {cells[3]}"
                     .rstrip())
    return "\n".join(lines)

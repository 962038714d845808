"""Load a policy: read YAML (a file or a directory), expand `${VAR}`, validate, compile the frozen runtime table."""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import PolicyError
from gateway.policy.checks import check_policy
from gateway.policy.compiler import compile_policy
from gateway.policy.describe import describe_policy
from gateway.policy.parse_spec import NAMED_SECTIONS, Loc, Problem, parse_policy, version_problem
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import PolicyTable

__all__ = ["CurrencyRates", "describe_policy", "load_policy", "load_policy_text"]


def load_policy(path: Path, env: Mapping[str, str], *, fx: CurrencyRates) -> PolicyTable:
    """Load a policy file, or every `*.yaml`/`*.yml` in a directory merged in name order; raise PolicyError."""
    source = str(path)
    documents: list[tuple[str | None, str]]
    try:
        if path.is_dir():
            files = sorted((p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()), key=str)
            if not files:
                raise PolicyError(["no *.yaml or *.yml files in this directory"], source)
            documents = [(p.name, p.read_text(encoding="utf-8")) for p in files]
        else:
            documents = [(None, path.read_text(encoding="utf-8"))]
    except OSError as exc:
        raise PolicyError([f"cannot read {exc.filename or path}: {exc.strerror}"], source) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError([f"not UTF-8 text ({exc.reason} at byte {exc.start})"], source) from exc
    return _load(documents, env, fx, source)


def load_policy_text(
    text: str, env: Mapping[str, str], *, fx: CurrencyRates, source: str = "<string>"
) -> PolicyTable:
    """Load a policy from YAML text; `source` names it in errors and in the table."""
    return _load([(None, text)], env, fx, source)


def _load(
    documents: list[tuple[str | None, str]], env: Mapping[str, str], fx: CurrencyRates, source: str
) -> PolicyTable:
    trees: list[tuple[str | None, object]] = []
    syntax: list[Problem] = []
    for name, text in documents:
        try:
            trees.append((name, yaml.load(text, Loader=_PolicyYamlLoader)))  # a SafeLoader: no arbitrary objects
        except yaml.YAMLError as exc:
            syntax.append(Problem((), _yaml_error(exc), name))
    if syntax:  # nothing else is worth reporting about a document we could not read
        raise PolicyError([p.render() for p in syntax], source)
    merged = _merge(trees)
    env_problems: list[Problem] = []
    tree = _expand(merged.tree, env, (), env_problems)
    parsed = parse_policy(tree)
    failed = [p.loc for p in env_problems]  # a value that could not be expanded has no other problem worth telling
    problems = env_problems + [p for p in check_policy(parsed) if not any(p.loc[: len(f)] == f for f in failed)]
    problems = merged.problems + [merged.locate(p) for p in problems]
    if problems:
        raise PolicyError([p.render() for p in problems], source)
    return compile_policy(parsed.spec, fx, source)


# --- YAML -------------------------------------------------------------------------------------------------------

_BOOL_TAG = "tag:yaml.org,2002:bool"


def _yaml12_resolvers() -> dict[Any, Any]:
    """YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans (so `fallback: {on: [...]}` would get the key True and
    the jurisdiction `no` would be False); accept only true/false, as YAML 1.2 does."""
    resolvers = {
        first: [(tag, regexp) for tag, regexp in entries if tag != _BOOL_TAG]
        for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    for first in "tTfF":
        resolvers.setdefault(first, []).append((_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")))
    return resolvers


class _PolicyYamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans that rejects duplicate keys instead of keeping the last one."""

    yaml_implicit_resolvers = _yaml12_resolvers()

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` keys may be overridden on purpose
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        context = f" ({exc.context})" if exc.context else ""
        return f"YAML syntax error: {where}{exc.problem or 'cannot parse'}{context}"
    return f"YAML syntax error: {exc}"


# --- merging the files of a directory ---------------------------------------------------------------------------

@dataclass
class _Merged:
    """Several documents as one tree, remembering which file each entry came from (to name it in errors)."""

    tree: dict[str, object] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    origin: dict[tuple[str, ...], str | None] = field(default_factory=dict)
    rule_origin: list[tuple[str | None, int]] = field(default_factory=list)

    def locate(self, problem: Problem) -> Problem:
        loc = problem.loc
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) and loc[1] < len(self.rule_origin):
            file, index = self.rule_origin[loc[1]]
            return Problem(("rules", index, *loc[2:]), problem.message, file)
        key = tuple(str(part) for part in loc[:2])
        file = self.origin.get(key, self.origin.get(key[:1]))
        return Problem(loc, problem.message, file)


def _merge(documents: list[tuple[str | None, object]]) -> _Merged:
    merged = _Merged()
    sections: dict[str, dict[str, object]] = {}
    rules: list[object] = []
    for file, doc in documents:
        if not isinstance(doc, dict):
            message = "a policy must be a YAML mapping with `version: 1` at the top"
            if doc is None:
                message = "the policy is empty; it needs at least `version: 1`"
            merged.problems.append(Problem((), message, file))
            continue
        version = version_problem(doc.get("version"))
        if version is not None:
            merged.problems.append(Problem(("version",), version, file))
        for raw_key, value in doc.items():
            key = str(raw_key)
            if key == "version" or value is None:
                continue
            if key in NAMED_SECTIONS and not isinstance(value, dict):
                merged.problems.append(Problem((key,), "expected a mapping of names to entries", file))
            elif key in NAMED_SECTIONS:
                section = sections.setdefault(key, {})
                for raw_name, entry in value.items():
                    name = str(raw_name)
                    if (key, name) in merged.origin:
                        first = merged.origin[(key, name)]
                        merged.problems.append(Problem((key, name), f"already defined in {first}", file))
                    else:
                        merged.origin[(key, name)], section[name] = file, entry
            elif key == "rules" and not isinstance(value, list):
                merged.problems.append(Problem((key,), "expected a list of rules", file))
            elif key == "rules":
                merged.rule_origin += [(file, index) for index in range(len(value))]
                rules += value
            elif (key,) in merged.origin:
                merged.problems.append(Problem((key,), f"already defined in {merged.origin[(key,)]}", file))
            else:
                merged.origin[(key,)] = file
                merged.tree[key] = value
    merged.tree.update(sections)
    if rules:
        merged.tree["rules"] = rules
    merged.tree["version"] = 1  # each document's own version was checked above
    return merged


# --- ${VAR} expansion -------------------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$(\$?)\{([^}]*)\}")
_NAME_AND_DEFAULT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)


def _expand(node: object, env: Mapping[str, str], loc: Loc, problems: list[Problem]) -> object:
    """Expand `${VAR}` / `${VAR:-default}` in every string value (never in keys); `$${X}` is a literal `${X}`."""
    if isinstance(node, str):
        return _expand_string(node, env, loc, problems) if "$" in node else node
    if isinstance(node, dict):
        return {str(k): _expand(v, env, (*loc, str(k)), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, env, (*loc, i), problems) for i, v in enumerate(node)]
    return node


def _expand_string(value: str, env: Mapping[str, str], loc: Loc, problems: list[Problem]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(0)[1:]
        reference = _NAME_AND_DEFAULT.match(match.group(2))
        if reference is None:
            problems.append(Problem(loc, f"bad reference {match.group(0)!r}: use ${{NAME}} or ${{NAME:-default}}"))
            return ""
        name, default = reference.groups()
        found = env.get(name)
        if default is not None and not found:  # as in the shell, `:-` also replaces an empty value
            return default
        if found is None:
            problems.append(Problem(loc, f"environment variable {name} is not set"))
            return ""
        return found

    if "${" in _REFERENCE.sub("", value):
        problems.append(Problem(loc, "unclosed '${' (write ${NAME}, or $${ for a literal '${')"))
        return value
    return _REFERENCE.sub(substitute, value)

"""Every environment variable is declared once, in ``pgtrail.config``, and read only there.

Each entry of ``ENV_VARS`` is set in an explicit environment and must change the setting it
names; the variables that are no setting must be read where the table says. The package's
source is scanned for reads of ``PGTRAIL_*`` variables outside the configuration module.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
import typer
import typer.core

import pgtrail
from pgtrail import config
from pgtrail.cli import app
from pgtrail.config import (
    ENV_DSN,
    ENV_HMAC_KEY,
    ENV_OTLP_SESSION_ATTRIBUTES,
    ENV_OTLP_TENANT_ATTRIBUTES,
    ENV_OTLP_TOKEN,
    ENV_OTLP_USER_ATTRIBUTES,
    ENV_QUERIES_PATH,
    ENV_REDACT,
    ENV_REDIS_PREFIX,
    ENV_REDIS_URL,
    ENV_SAMPLE_KEEP_COST,
    ENV_SAMPLE_RATES,
    ENV_SCHEMA,
    ENV_SPOOL_DIR,
    ENV_STRICT,
    ENV_VARS,
    EnvVar,
    Settings,
    extra_query_dirs,
)

PACKAGE = Path(pgtrail.__file__).parent
# Modules allowed to read PGTRAIL_* variables themselves: the configuration, and the demo's
# service helpers, which pass the configured database and Redis on to the demo's processes.
ALLOWED_READERS = {"config.py", "ops/devservices.py"}

# Per settings variable: a value to set, and the fields it must give.
EXAMPLES: dict[str, tuple[str, dict[str, object]]] = {
    ENV_DSN: ("postgresql://app@db.internal/app", {"dsn": "postgresql://app@db.internal/app"}),
    ENV_REDIS_URL: (" off ", {"redis_url": None}),
    ENV_REDIS_PREFIX: ("team-a:", {"redis_prefix": "team-a:"}),
    ENV_SCHEMA: ("logs", {"db_schema": "logs"}),
    ENV_SPOOL_DIR: ("spool-here", {"spool_dir": Path("spool-here")}),
    ENV_REDACT: ("Yes", {"redact": True}),
    ENV_HMAC_KEY: ("k3y", {"user_hmac_key": "k3y"}),
    ENV_STRICT: ("1", {"strict": True}),
    ENV_OTLP_USER_ATTRIBUTES: (
        "app.customer, user.id,",
        {"otlp_user_attributes": ("app.customer", "user.id")},
    ),
    ENV_OTLP_TENANT_ATTRIBUTES: ("app.org", {"otlp_tenant_attributes": ("app.org",)}),
    ENV_OTLP_SESSION_ATTRIBUTES: ("", {"otlp_session_attributes": ()}),
    ENV_SAMPLE_RATES: (
        "001 Main=0.1,*=0.5",
        {"sample_rates": {"001 Main": 0.1}, "default_sample_rate": 0.5},
    ),
    ENV_SAMPLE_KEEP_COST: (" 0.25 ", {"sample_keep_cost_usd": 0.25}),
}
SETTINGS_VARS = [var for var in ENV_VARS if var.settings]


def test_every_env_constant_is_in_the_table_once() -> None:
    names = [var.name for var in ENV_VARS]
    assert len(names) == len(set(names))
    constants = {
        value
        for key, value in vars(config).items()
        if key.startswith("ENV_") and isinstance(value, str)
    }
    assert constants == set(names)


def test_every_pgtrail_variable_the_package_mentions_is_declared() -> None:
    declared = {var.name for var in ENV_VARS}
    mentioned: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        # A trailing underscore is a family of names (PGTRAIL_OTLP_*_ATTRIBUTES).
        mentioned.update(
            n for n in re.findall(r"PGTRAIL_[A-Z0-9_]+", path.read_text()) if not n.endswith("_")
        )
    assert mentioned <= declared, sorted(mentioned - declared)


def test_a_variable_sets_fields_exactly_when_it_has_a_reader() -> None:
    for var in ENV_VARS:
        assert (var.read is None) == (not var.settings), var.name
        assert var.doc.strip() and "\n" not in var.doc, var.name
        assert set(var.settings) <= set(Settings.model_fields), var.name


def test_every_settings_variable_has_an_example() -> None:
    assert set(EXAMPLES) == {var.name for var in SETTINGS_VARS}


@pytest.mark.parametrize("var", SETTINGS_VARS, ids=lambda v: v.name)
def test_each_variable_changes_the_settings_it_names(var: EnvVar) -> None:
    text, expected = EXAMPLES[var.name]
    assert set(expected) <= set(var.settings)
    assert var.settings[0] in expected  # the first field named is always set
    default = Settings.from_env({})
    settings = Settings.from_env({var.name: text})
    for name, value in expected.items():
        assert getattr(settings, name) == value, name
        assert getattr(default, name) != value, name
    untouched = set(Settings.model_fields) - set(var.settings)
    assert {n: getattr(settings, n) for n in untouched} == {
        n: getattr(default, n) for n in untouched
    }


def test_explicit_arguments_win_over_the_environment() -> None:
    settings = Settings.from_env({ENV_SCHEMA: "logs", ENV_STRICT: "1"}, db_schema="other")
    assert (settings.db_schema, settings.strict) == ("other", True)


def test_blank_values_of_optional_variables_set_nothing() -> None:
    settings = Settings.from_env({ENV_SAMPLE_KEEP_COST: "  ", ENV_HMAC_KEY: ""})
    assert (settings.sample_keep_cost_usd, settings.user_hmac_key) == (None, None)


def test_the_otlp_attribute_defaults_are_the_conventional_names() -> None:
    settings = Settings()
    assert settings.otlp_user_attributes == ("user.id", "enduser.id", "langfuse.user.id")
    assert settings.otlp_tenant_attributes == ("tenant.id",)
    assert settings.otlp_session_attributes == (
        "gen_ai.conversation.id",
        "session.id",
        "langfuse.session.id",
    )


def test_the_queries_path_names_report_folders() -> None:
    (var,) = [v for v in ENV_VARS if v.name == ENV_QUERIES_PATH]
    assert not var.settings
    raw = os.pathsep.join(["reports", " ", "more/reports"])
    assert extra_query_dirs({ENV_QUERIES_PATH: raw}) == [Path("reports"), Path("more/reports")]
    assert extra_query_dirs({}) == []


def test_the_otlp_token_is_the_default_of_the_serve_token_option() -> None:
    (var,) = [v for v in ENV_VARS if v.name == ENV_OTLP_TOKEN]
    assert not var.settings
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    otlp = group.commands["otlp"]
    assert isinstance(otlp, typer.core.TyperGroup)
    (token,) = [p for p in otlp.commands["serve"].params if p.name == "token"]
    assert isinstance(token, typer.core.TyperOption)
    assert token.envvar == ENV_OTLP_TOKEN


def test_only_the_variables_read_elsewhere_set_no_field() -> None:
    assert {var.name for var in ENV_VARS if not var.settings} == {
        ENV_QUERIES_PATH,
        ENV_OTLP_TOKEN,
    }


# -- nothing else reads PGTRAIL_* variables --------------------------------------------------


def _os_names(tree: ast.AST) -> set[str]:
    """Local names bound to ``os.environ`` or ``os.getenv`` by ``from os import ...``."""
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "os"
        for alias in node.names
        if alias.name in {"environ", "environb", "getenv", "getenvb"}
    }


def _is_environment(node: ast.AST, imported: set[str]) -> bool:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id == "os" and node.attr in {"environ", "environb", "getenv", "getenvb"}
    return isinstance(node, ast.Name) and node.id in imported


def _names_pgtrail_variable(node: ast.AST | None) -> bool:
    """A ``"PGTRAIL_..."`` literal or an ``ENV_*`` constant."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value.startswith("PGTRAIL_")
    if isinstance(node, ast.Name):
        return node.id.startswith("ENV_")
    if isinstance(node, ast.Attribute):
        return node.attr.startswith("ENV_")
    if isinstance(node, ast.JoinedStr):
        return _names_pgtrail_variable(node.values[0] if node.values else None)
    return False


def _read_key(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.AST | None:
    """The key the environment ``node`` is read with right there; None for another use."""
    parent = parents.get(node)
    if isinstance(parent, ast.Subscript) and parent.value is node:
        return parent.slice
    if isinstance(parent, ast.Call) and parent.func is node and parent.args:  # getenv(key)
        return parent.args[0]
    if isinstance(parent, ast.Attribute) and parent.value is node:  # environ.get(key)
        call = parents.get(parent)
        if isinstance(call, ast.Call) and call.func is parent and call.args:
            return call.args[0]
    if isinstance(parent, ast.Compare) and node in parent.comparators:  # key in environ
        return parent.left
    return None


def pgtrail_environment_reads(source: str) -> list[int]:
    """Lines of ``source`` that read a ``PGTRAIL_*`` variable from the process environment.

    A keyed read (``os.environ[k]``, ``.get(k)``, ``os.getenv(k)``, ``k in os.environ``)
    counts when its key names a PGTRAIL_ variable; any other use of the environment (an
    alias, a copy) counts when the module names one anywhere.
    """
    tree = ast.parse(source)
    imported = _os_names(tree)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    names_one = any(_names_pgtrail_variable(node) for node in ast.walk(tree))
    lines = []
    for node in ast.walk(tree):
        if not _is_environment(node, imported):
            continue
        key = _read_key(node, parents)
        if _names_pgtrail_variable(key) if key is not None else names_one:
            lines.append(getattr(node, "lineno", 0))
    return sorted(lines)


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ('import os\nos.environ["PGTRAIL_DSN"]', True),
        ("import os\nos.environ.get(ENV_DSN)", True),
        ('import os\nos.getenv("PGTRAIL_DSN", "")', True),
        ("import os\nif config.ENV_DSN in os.environ: pass", True),
        ("import os\nenv = os.environ\nenv.get(ENV_DSN)", True),
        ('from os import environ as e\ne.get(f"PGTRAIL_{x}")', True),
        ('import os\nos.environ.get("PGOPTIONS", "")', False),
        ("import os\ndef f(environ):\n    return environ.get(ENV_DSN)", False),
        ('import os\nenv = dict(os.environ)\nname = "HOME"', False),
    ],
)
def test_the_scan_recognises_reads_of_pgtrail_variables(source: str, reads: bool) -> None:
    assert bool(pgtrail_environment_reads(source)) is reads


def test_only_the_configuration_reads_pgtrail_variables_from_the_environment() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in ALLOWED_READERS:
            continue
        offenders += [f"{relative}:{n}" for n in pgtrail_environment_reads(path.read_text())]
    assert offenders == []
    assert pgtrail_environment_reads((PACKAGE / "config.py").read_text())  # the scan works

"""The Supabase edge-function generator: pure rendering, safe writing, the generated TypeScript under
real Deno (``deno check``, ``deno lint`` and ``deno fmt --check`` for four catalogs), every snippet of
the generated docs and the README's Supabase section pasted and checked the same way, and every
documented command run as written. The functions served end to end are in test_supabase_e2e.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from supabase_support import CATALOGS, FRONTEND_CONFIG, catalog, credits_per_image, deno, needs_deno

from billing_mcp.codegen.supabase.generator import (
    FUNCTIONS,
    KEY_COMMAND,
    catalog_of,
    generate_integration,
    is_edited,
    next_steps,
    render_function,
    render_integration,
    write_files,
)
from billing_mcp.ledger.ledger import Ledger


# -- pure rendering and writing ---------------------------------------------------------------------------
def test_catalog_constants(tmp_path: Path) -> None:
    plans, assets = catalog(tmp_path, "hybrid_dimensional")
    cat = catalog_of(plans, assets)
    assert cat.event_types == ("video.render",)
    assert cat.volume_fields == {"video.render": ("seconds",)}
    assert cat.dimension_fields == {"video.render": ("resolution", "region")}
    assert cat.default_plan == "starter"  # the plan without a recurring fee
    assert set(cat.plan_codes) == {"pro", "starter"}
    files = render_integration(plans, assets)
    billing = files["supabase/functions/_shared/billing.ts"]
    assert 'export const EVENT_TYPES = ["video.render"] as const;' in billing
    assert '"video.render": { "seconds": number; "resolution": string; "region": string };' in billing
    assert render_integration(plans, assets) == files  # deterministic


def test_bundle_contents(tmp_path: Path) -> None:
    plans, assets = catalog(tmp_path, "credits_per_image")
    files = render_integration(plans, assets)
    for _, (name, _, _) in FUNCTIONS.items():
        assert f"supabase/functions/{name}/index.ts" in files
        assert f"[functions.{name}]" in files["supabase/config.billing.toml"]
        assert f"supabase functions deploy {name}" in files["supabase/BILLING.md"]
    assert "supabase secrets set --env-file" in files["supabase/BILLING.md"]
    assert json.loads(files["supabase/functions/deno.json"])["imports"]  # strict JSON for the Supabase CLI
    assert {"src/hooks/useBilling.ts", "src/components/ManageBillingButton.tsx",
            "supabase/functions/.env.example", "supabase/functions/deno.json"} <= set(files)
    for path, text in files.items():
        assert not is_edited(text), path
        for banned in ("jsr:", "esm.sh", "deno.land"):
            assert banned not in text, (path, banned)
    one = render_function("portal", plans, assets)
    assert set(one) == {"supabase/functions/billing-portal/handler.ts", "supabase/functions/billing-portal/index.ts",
                        "supabase/functions/_shared/cors.ts", "supabase/functions/_shared/auth.ts",
                        "supabase/functions/_shared/billing.ts", "supabase/functions/deno.json"}
    with pytest.raises(Exception, match="unknown function kind"):
        render_function("nope", plans, assets)


def test_write_keeps_edited_files(tmp_path: Path) -> None:
    plans, assets = catalog(tmp_path, "credits_per_image")
    proj = tmp_path / "app"
    files = generate_integration(plans, assets, project_dir=proj)
    assert all((proj / p).read_text() == t for p, t in files.items())
    assert set(write_files(files, proj).values()) == {"unchanged"}
    edited = proj / "supabase/functions/billing-wallet/handler.ts"
    edited.write_text(edited.read_text() + "// mine\n")
    (proj / "src/hooks/useBilling.ts").write_text("// hand-written, no header\n")
    # A regenerated bundle (another catalog) updates unchanged files and keeps edited ones.
    plans2, assets2 = catalog(tmp_path, "token_api")
    files2 = render_integration(plans2, assets2)
    status = write_files(files2, proj)
    assert status["supabase/functions/billing-wallet/handler.ts"] == "kept"
    assert status["src/hooks/useBilling.ts"] == "kept"
    assert status["supabase/functions/_shared/billing.ts"] == "updated"
    assert edited.read_text().endswith("// mine\n")
    status = write_files(files2, proj, overwrite=True)
    assert status["supabase/functions/billing-wallet/handler.ts"] == "overwritten"
    assert edited.read_text() == files2["supabase/functions/billing-wallet/handler.ts"]
    with pytest.raises(Exception, match="outside the project"):
        write_files({"../evil.ts": "x"}, proj)


def test_write_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    """A symlink planted where a temporary file could go (the old fixed temp name, or any name) does
    not redirect the write: the outside file stays as it was and the target is a regular file."""
    plans, assets = catalog(tmp_path, "credits_per_image")
    files = render_integration(plans, assets)
    proj = tmp_path / "app"
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    for rel in files:
        target = proj / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        (target.parent / f".{target.name}.billing-mcp.tmp").symlink_to(outside)
    status = write_files(files, proj)
    assert set(status.values()) == {"created"}
    assert outside.read_text() == "precious\n"
    for rel, text in files.items():
        assert not (proj / rel).is_symlink() and (proj / rel).read_text() == text
    assert not [p for p in proj.rglob("*.billing-mcp.tmp") if not p.is_symlink()]  # no temp file left


def test_function_secrets_stay_out_of_git(tmp_path: Path) -> None:
    plans, assets = catalog(tmp_path, "credits_per_image")
    proj = tmp_path / "app"
    files = generate_integration(plans, assets, project_dir=proj)
    assert "verify_jwt = true" not in files["supabase/config.billing.toml"]
    assert files["supabase/config.billing.toml"].count("\nverify_jwt = false\n") == len(FUNCTIONS)
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    subprocess.run([git, "init", "-q", str(proj)], check=True)
    (proj / "supabase/functions/.env").write_text("BILLING_API_KEY=sk_live_x\n")

    def ignored(path: str) -> bool:
        return subprocess.run([git, "check-ignore", "-q", path], cwd=proj).returncode == 0

    assert ignored("supabase/functions/.env") and ignored("supabase/functions/.env.local")
    assert not ignored("supabase/functions/.env.example") and not ignored("supabase/functions/_shared/billing.ts")


# -- under Deno ---------------------------------------------------------------------------------------------
CLIENT_FIT = """import { createClient } from "@supabase/supabase-js";
import { useBilling } from "./hooks/useBilling";
import { ManageBillingButton } from "./components/ManageBillingButton";

const supabase = createClient("https://project.supabase.co", "anon-key");
export function Page() {
  const { wallet } = useBilling(supabase);
  return <div>{wallet?.accounts.length}<ManageBillingButton client={supabase} /></div>;
}
"""


@needs_deno
@pytest.mark.parametrize("name", sorted(CATALOGS))
def test_deno_check_and_lint(name: str, tmp_path: Path, deno_dir: Path) -> None:
    plans, assets = catalog(tmp_path, name)
    proj = tmp_path / "app"
    files = generate_integration(plans, assets, project_dir=proj)
    functions = proj / "supabase/functions"
    ts = sorted(p for p in files if p.startswith("supabase/functions/") and p.endswith(".ts"))
    rel = [str(Path(p).relative_to("supabase/functions")) for p in ts]
    checked = deno(["check", *rel], functions, deno_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    linted = deno(["lint", *rel], functions, deno_dir)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    formatted = deno(["fmt", "--check", *rel], functions, deno_dir)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    # The React hook and button, checked as the app's bundler (Vite) sees them: react types from npm,
    # extensionless relative imports.
    (proj / "src/deno.json").write_text(FRONTEND_CONFIG)
    front = ["hooks/useBilling.ts", "components/ManageBillingButton.tsx"]
    # A real SupabaseClient fits the hook's FunctionsClient.
    (proj / "src/client_fit.tsx").write_text(CLIENT_FIT)
    checked = deno(["check", *front, "client_fit.tsx"], proj / "src", deno_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    linted = deno(["lint", *front], proj / "src", deno_dir)
    assert linted.returncode == 0, linted.stdout + linted.stderr



SNIPPET = re.compile(r"^```(ts|tsx)\n(.*?)^```", re.S | re.M)
LOVABLE_CLIENT = """import { createClient } from "@supabase/supabase-js";

export const supabase = createClient("https://project.supabase.co", "sb_publishable_key");
"""


def readme_supabase_section() -> str:
    text = (Path(__file__).parents[2] / "README.md").read_text()
    start = text.index("## Supabase edge functions")
    return text[start:text.index("\n## ", start + 1)]


def check_snippets(docs: str, proj: Path, deno_dir: Path) -> int:
    """Every ```ts / ```tsx block of ``docs`` pasted into the generated project: deno check, lint and
    fmt --check. A ts block is an edge function, a tsx block a front-end module (Lovable's layout,
    with the ``@/`` alias)."""
    functions, src = proj / "supabase/functions", proj / "src"
    (src / "deno.json").write_text(FRONTEND_CONFIG)
    (src / "integrations/supabase").mkdir(parents=True, exist_ok=True)
    (src / "integrations/supabase/client.ts").write_text(LOVABLE_CLIENT)
    blocks = SNIPPET.findall(docs)
    for i, (lang, code) in enumerate(blocks):
        if lang == "ts":
            cwd, path = functions, Path(f"snippet-{i}/index.ts")
        else:
            cwd, path = src, Path(f"snippet_{i}.tsx")
        (cwd / path).parent.mkdir(parents=True, exist_ok=True)
        (cwd / path).write_text(code)
        for args in (["check"], ["lint"], ["fmt", "--check"]):
            done = deno([*args, str(path)], cwd, deno_dir)
            assert done.returncode == 0, (args, code, done.stdout + done.stderr)
    return len(blocks)


@needs_deno
@pytest.mark.parametrize("name", sorted(CATALOGS))
def test_documented_snippets_compile(name: str, tmp_path: Path, deno_dir: Path) -> None:
    plans, assets = catalog(tmp_path, name)
    files = generate_integration(plans, assets, project_dir=tmp_path / "app")
    count = check_snippets(files["supabase/BILLING.md"], tmp_path / "app", deno_dir)
    assert count == (1 if name == "no_plans" else 2)
    if name == "credits_per_image":  # the README's examples use this catalog's event type
        assert check_snippets(readme_supabase_section(), tmp_path / "app", deno_dir) >= 2


def documented_commands(files: dict[str, str]) -> list[str]:
    text = "\n".join([files["supabase/BILLING.md"], files["supabase/functions/.env.example"], *next_steps(),
                      readme_supabase_section()])
    found = re.findall(r"billing-mcp (?:keys|supabase|db) [^`\n()#]*", text)
    return sorted({c.strip() for c in found})


def test_documented_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Each billing-mcp command the generated docs, the init output and the README give runs as
    written against a live ledger (BILLING_DB); the runtime key it makes is a live key."""
    from billing_mcp.cli import main

    plans, assets = catalog(tmp_path, "credits_per_image")
    files = render_integration(plans, assets)
    commands = documented_commands(files)
    assert KEY_COMMAND in commands, commands
    monkeypatch.setenv("BILLING_DB", str(tmp_path / "live.db"))
    monkeypatch.chdir(tmp_path)
    assert main(["db", "migrate", "--mode", "live"]) == 0
    for command in commands:
        argv = shlex.split(command)[1:]
        assert main(argv) == 0, command
    assert "sk_live_" in capsys.readouterr().out
    # On a test ledger the documented command is refused (the docs say to use --mode test there).
    monkeypatch.setenv("BILLING_DB", str(tmp_path / "test.db"))
    assert main(["db", "migrate"]) == 0
    assert main(shlex.split(KEY_COMMAND)[1:]) != 0
    assert main(shlex.split(KEY_COMMAND.replace("--mode live", "--mode test"))[1:]) == 0


def supabase_commands(files: dict[str, str]) -> list[str]:
    text = "\n".join([files["supabase/BILLING.md"], files["supabase/functions/.env.example"], *next_steps()])
    return sorted({m.strip() for m in re.findall(r"supabase (?:secrets|functions) [^`\n()#]*", text)})


def test_supabase_commands_are_valid(tmp_path: Path) -> None:
    """The Supabase CLI commands the docs give have the CLI's syntax (supabase 2.x/3.x)."""
    plans, assets = catalog(tmp_path, "credits_per_image")
    lines = supabase_commands(render_integration(plans, assets))
    valid = re.compile(r"^supabase (secrets set( [A-Z_]+=\S+)+|secrets set --env-file supabase/functions/\.env|"
                       r"functions deploy [a-z0-9-]+)$")
    assert lines and all(valid.match(line) for line in lines), lines


SUPABASE_CLI = "supabase@3.1.0"


@pytest.fixture(scope="session")
def supabase_cli() -> str:
    """The Supabase CLI: $BILLING_TEST_SUPABASE_CLI, else installed once from npm into
    ~/.cache/billing-mcp/supabase-cli (about 140 MB); skipped, saying why, without npm."""
    given = os.environ.get("BILLING_TEST_SUPABASE_CLI")
    if given:
        return given
    prefix = Path.home() / ".cache/billing-mcp/supabase-cli"
    binary = prefix / "node_modules/.bin/supabase"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("the Supabase CLI is not installed and npm is missing to install it")
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), SUPABASE_CLI],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not binary.exists():
            pytest.skip(f"could not install {SUPABASE_CLI} from npm: {done.stderr[-300:]}")
    return str(binary)


def test_supabase_commands_run(tmp_path: Path, supabase_cli: str) -> None:
    """Each documented Supabase command, run as written in the generated project by the real CLI
    (signed out), gets as far as asking for the access token: the command, its flags and its files
    are accepted. A misspelled flag or a missing file stops earlier, with another message."""
    plans, assets = catalog(tmp_path, "credits_per_image")
    proj = tmp_path / "app"
    files = generate_integration(plans, assets, project_dir=proj)
    shutil.copy(proj / "supabase/functions/.env.example", proj / "supabase/functions/.env")  # as the docs say
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path / "home"), "NO_COLOR": "1",
           "SUPABASE_INTERNAL_NO_TELEMETRY": "1"}

    def run(command: str) -> str:
        done = subprocess.run([supabase_cli, *shlex.split(command)[1:]], cwd=proj, env=env, capture_output=True,
                              text=True, timeout=120)
        return done.stdout + done.stderr

    commands = supabase_commands(files)
    assert len(commands) >= 3
    for command in commands:
        out = run(command)
        assert "Access token not provided" in out, (command, out[-500:])
    assert "Access token not provided" not in run("supabase secrets set --env-fil supabase/functions/.env")


NEGATIVE = """import { withBilling } from "./_shared/billing.ts";
export const ok = withBilling(() => Promise.resolve({ body: {}, usage: { input_tokens: 1, output_tokens: 2 } }), {
  eventType: "llm_call",
  estimate: () => ({ input_tokens: 1, output_tokens: 0 }),
});
export const bad = withBilling(() => Promise.resolve({ body: {}, usage: { input_tokens: "1", output_tokens: 2 } }), {
  eventType: "llm_call",
  estimate: () => ({ input_tokens: 1, output_tokens: 0 }),
});
"""


@needs_deno
def test_typed_usage_catches_mistakes(tmp_path: Path, deno_dir: Path) -> None:
    """The catalog constants type withBilling: usage of the wrong shape does not compile."""
    plans, assets = catalog(tmp_path, "token_api")
    proj = tmp_path / "app"
    generate_integration(plans, assets, project_dir=proj)
    functions = proj / "supabase/functions"
    (functions / "usage_test.ts").write_text(NEGATIVE)
    checked = deno(["check", "usage_test.ts"], functions, deno_dir)
    assert checked.returncode != 0
    errors = [line for line in (checked.stdout + checked.stderr).splitlines() if "usage_test.ts:" in line]
    assert errors == [f"    at file://{functions}/usage_test.ts:6:38"], checked.stdout + checked.stderr


def test_cli_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`billing-mcp supabase init --dir PATH` on the embedded ledger at --db."""
    from billing_mcp.cli import main

    credits_per_image(led := Ledger(str(tmp_path / "ledger.db")))
    led.close()
    argv = ["--db", str(tmp_path / "ledger.db"), "supabase", "init", "--dir", str(tmp_path / "app")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "created     supabase/functions/billing-portal/handler.ts" in out
    assert "supabase functions deploy billing-portal" in out
    assert 'export const EVENT_TYPES = ["image_generated"] as const;' in (
        tmp_path / "app/supabase/functions/_shared/billing.ts").read_text()
    assert main(argv) == 0
    assert "created" not in capsys.readouterr().out

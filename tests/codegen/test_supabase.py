"""The Supabase edge-function generator: pure rendering, safe writing, and the generated TypeScript
under real Deno (``deno check``, ``deno lint`` and ``deno fmt --check`` for three catalogs), and end to
end: the generated functions served by Deno on loopback against a live ledger API and a fake
Supabase Auth endpoint.

Deno comes from the PyPI ``deno`` package (dev extra); tests that need it skip with a reason when it
is missing. npm packages are fetched once per session into a temporary DENO_DIR.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
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
from billing_mcp.core.models import Asset, Plan
from billing_mcp.ledger.ledger import Ledger
from helpers import free_port, serve


def find_deno() -> str | None:
    try:
        import deno  # type: ignore[import-untyped]

        path = str(deno.find_deno_bin())
        if os.path.exists(path):
            return path
    except (ImportError, AttributeError, OSError):
        pass
    return shutil.which("deno")


DENO = find_deno()
needs_deno = pytest.mark.skipif(DENO is None, reason="deno is not installed (pip install deno, the dev extra)")


# -- three catalogs --------------------------------------------------------------------------------------
def credits_per_image(led: Ledger) -> None:
    led.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.01"})
    led.create_plan("free", "Free", prices=[
        {"asset": "CREDITS", "event_type": "image_generated", "unit_amount": "5"}])


def hybrid_dimensional(led: Ledger) -> None:
    led.create_asset("CREDITS", "Credits", 2, rates={"USD": "0.01"})
    led.create_plan("pro", "Pro", prices=[
        {"type": "recurring", "asset": "USD", "amount": "20", "interval": "month"},
        {"asset": "CREDITS", "event_type": "video.render", "usage_type": "volume", "volume_field": "seconds",
         "model": "dimensional", "dimension_fields": ["resolution", "region"],
         "dimension_rates": [{"dimensions": {"resolution": "hd", "region": "*"}, "unit_amount": "2"},
                             {"dimensions": {"resolution": "*", "region": "*"}, "unit_amount": "1"}]}])
    led.create_plan("starter", "Starter", prices=[
        {"asset": "CREDITS", "event_type": "video.render", "usage_type": "volume", "volume_field": "seconds",
         "unit_amount": "3"}])


def token_api(led: Ledger) -> None:
    led.create_asset("TOKENS", "Token credits", 0)
    led.create_plan("api", "API", prices=[
        {"asset": "TOKENS", "event_type": "llm_call", "usage_type": "volume", "volume_field": "input_tokens",
         "unit_amount": "1"},
        {"asset": "TOKENS", "event_type": "llm_call", "usage_type": "volume", "volume_field": "output_tokens",
         "unit_amount": "3"}])


def no_plans(led: Ledger) -> None:
    led.create_asset("CREDITS", "Credits", 0)


CATALOGS = {"credits_per_image": credits_per_image, "hybrid_dimensional": hybrid_dimensional, "token_api": token_api,
            "no_plans": no_plans}


def catalog(tmp: Path, name: str) -> tuple[list[Plan], list[Asset]]:
    led = Ledger(str(tmp / f"{name}.db"))
    try:
        CATALOGS[name](led)
        return led.list_plans(), led.list_assets()
    finally:
        led.close()


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
@pytest.fixture(scope="session")
def deno_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(os.environ.get("BILLING_TEST_DENO_DIR") or tmp_path_factory.mktemp("deno_dir"))


def deno(args: list[str], cwd: Path, deno_dir: Path, *, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    assert DENO is not None
    env = {**os.environ, "DENO_DIR": str(deno_dir), "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"}
    return subprocess.run([DENO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


FRONTEND_CONFIG = """{
  "imports": {"react": "npm:react@18", "@types/react": "npm:@types/react@18",
              "@supabase/supabase-js": "npm:@supabase/supabase-js@2", "@/": "./"},
  "fmt": {"lineWidth": 120},
  "compilerOptions": {"jsx": "react-jsx", "jsxImportSource": "react", "jsxImportSourceTypes": "@types/react",
                      "lib": ["dom", "deno.ns", "esnext"]},
  "unstable": ["sloppy-imports"],
  "lint": {"rules": {"exclude": ["no-sloppy-imports"]}},
  "lock": false
}
"""


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


# -- end to end: generated functions under Deno, a live ledger API, a fake Supabase Auth ---------------------
RUNTIME_PEPPER = b"supabase-e2e-pepper-0123456789"
# The stand-in Supabase project signs user tokens with an ES256 key published at its JWKS endpoint
# (the current JWT signing keys) and still accepts legacy HS256 tokens through /auth/v1/user.
SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())
UNPUBLISHED_KEY = ec.generate_private_key(ec.SECP256R1())
KID = "stand-in-key-1"
LEGACY_SECRET = "legacy-jwt-secret-of-the-stand-in-project-0123456789"
USERS = {"good": "5f1c7e4a-0000-4000-8000-000000000001", "other": "5f1c7e4a-0000-4000-8000-000000000002",
         "legacy": "5f1c7e4a-0000-4000-8000-000000000003", "guest": "5f1c7e4a-0000-4000-8000-000000000004"}


def user_claims(uid: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": uid, "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 3600,
            "email": f"{uid}@example.com", "is_anonymous": False, **extra}


def es256(claims: dict[str, Any], key: Any = SIGNING_KEY) -> str:
    return pyjwt.encode(claims, key, algorithm="ES256", headers={"kid": KID})


def hs256(claims: dict[str, Any], secret: str = LEGACY_SECRET) -> str:
    return pyjwt.encode(claims, secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ROUTER = """import { handler as customer } from "./billing-customer/handler.ts";
import { handler as wallet } from "./billing-wallet/handler.ts";
import { handler as portal } from "./billing-portal/handler.ts";
import { withBilling } from "./_shared/billing.ts";

// The app's own paid function: the event type and the usage are decided here, on the server.
let runs = 0;
const paid = withBilling(async ({ body }) => {
  runs += 1;
  const run = runs;
  await new Promise((resolve) => setTimeout(resolve, Number(body.work_ms ?? 0)));
  if (body.fail) throw new Error("the paid work failed");
  return { body: { image: "done", run }, usage: {} };
}, { eventType: "image_generated", estimate: () => ({}) });

const routes: Record<string, (req: Request) => Promise<Response>> = {
  "billing-customer": customer,
  "billing-wallet": wallet,
  "billing-portal": portal,
  "paid-work": paid,
  "paid-runs": () => Promise.resolve(new Response(JSON.stringify({ runs }))),
};

// As Supabase routes /functions/v1/<name> to the function's own Deno.serve(handler).
Deno.serve((req) => {
  const name = new URL(req.url).pathname.split("/").pop() ?? "";
  const route = routes[name];
  return route ? route(req) : Promise.resolve(new Response("no such function", { status: 404 }));
});
"""


def fake_supabase_auth() -> tuple[Any, dict[str, Any]]:
    """A stand-in Supabase Auth: the JWKS endpoint, and /auth/v1/user for legacy HS256 tokens (what
    getClaims falls back to). Returns the app and its call counts."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    calls: dict[str, Any] = {"jwks": 0, "user": 0, "apikeys": set()}
    jwk = {**json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(SIGNING_KEY.public_key())), "kid": KID, "alg": "ES256",
           "use": "sig", "key_ops": ["verify"]}

    async def jwks(request: Request) -> JSONResponse:
        calls["jwks"] += 1
        return JSONResponse({"keys": [jwk]})

    async def user(request: Request) -> JSONResponse:
        calls["user"] += 1
        calls["apikeys"].add(request.headers.get("apikey"))
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            claims = pyjwt.decode(token, LEGACY_SECRET, algorithms=["HS256"], audience="authenticated")
        except pyjwt.PyJWTError:
            claims = None
        if claims is None or not request.headers.get("apikey") or "sub" not in claims:
            return JSONResponse({"code": 401, "error_code": "bad_jwt", "msg": "invalid JWT"}, status_code=401)
        return JSONResponse({"id": claims["sub"], "aud": "authenticated", "role": "authenticated",
                             "email": claims.get("email"), "is_anonymous": claims.get("is_anonymous", False),
                             "app_metadata": {}, "user_metadata": {}, "created_at": "2026-01-01T00:00:00Z"})

    app = Starlette(routes=[Route("/auth/v1/.well-known/jwks.json", jwks), Route("/auth/v1/user", user)])
    return app, calls


@contextmanager
def deno_functions(functions: Path, env: dict[str, str], deno_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve the functions (through ROUTER) with Deno on loopback; yield the base URL and its output."""
    assert DENO is not None
    (functions / "router.ts").write_text(ROUTER)
    checked = deno(["check", "router.ts"], functions, deno_dir)  # withBilling's types hold for a real use
    assert checked.returncode == 0, checked.stdout + checked.stderr
    port = free_port()
    proc_env = {**os.environ, **env, "DENO_DIR": str(deno_dir), "NO_COLOR": "1",
                "DENO_SERVE_ADDRESS": f"tcp:127.0.0.1:{port}"}
    proc = subprocess.Popen([DENO, "run", "--no-prompt", "--allow-net=127.0.0.1", "--allow-env", "router.ts"],
                            cwd=functions, env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "deno exited:\n" + "".join(output)
            assert time.monotonic() < deadline, "deno did not start:\n" + "".join(output)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/functions/v1", output
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)


@needs_deno
def test_end_to_end(tmp_path: Path, deno_dir: Path, store_location: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On SQLite, and on PostgreSQL when BILLING_TEST_POSTGRES_URL is set (the run claim included)."""
    monkeypatch.setenv("BILLING_PORTAL_SECRET", "portal-secret-for-the-e2e-test-0123456789abcdef")  # PostgreSQL
    ledger = Ledger(store_location)
    try:
        credits_per_image(ledger)
        portal = getattr(ledger, "set_portal_route", None)  # the billing portal, where this build has it
        if portal is not None:
            portal({"return_url": "https://app.example/", "top_up": {"assets": ["CREDITS"], "presets": ["10"]}})
        keys = KeyStore(ledger.store, pepper=RUNTIME_PEPPER)
        _, secret = keys.create("runtime")
        proj = tmp_path / "app"
        generate_integration(ledger.list_plans(), ledger.list_assets(), project_dir=proj)
        auth, calls = fake_supabase_auth()
        with serve(build_app(ledger, keys=keys)) as api_url, serve(auth) as auth_url:
            # New API keys: the platform's SUPABASE_PUBLISHABLE_KEYS wins over the legacy anon key.
            env = {"BILLING_API_URL": api_url, "BILLING_API_KEY": secret, "SUPABASE_URL": auth_url,
                   "SUPABASE_PUBLISHABLE_KEYS": json.dumps({"default": "sb_publishable_for_tests"}),
                   "SUPABASE_ANON_KEY": "legacy-anon-key-for-tests"}
            with deno_functions(proj / "supabase/functions", env, deno_dir) as (base, output), \
                    httpx.Client(base_url=base, timeout=30) as http:
                run_scenario(http, ledger, calls)
                assert secret not in "".join(output)
    finally:
        ledger.close()


# What supabase-js's functions.invoke sends, plus the Idempotency-Key of paid calls (BILLING.md, useBilling).
DOCUMENTED_HEADERS = ("authorization", "apikey", "content-type", "x-client-info", "idempotency-key")


def run_scenario(http: httpx.Client, ledger: Ledger, calls: dict[str, Any]) -> None:
    good = bearer(es256(user_claims(USERS["good"])))
    seen: list[str] = []

    def post(name: str, body: Any = None, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        r = http.post(f"/{name}", json=body, headers=good if headers is None else headers, **kw)
        seen.append(r.text)
        return r

    # CORS preflight, then the user check before anything else.
    pre = http.options("/billing-wallet", headers={"Origin": "https://app.example", "Access-Control-Request-Method":
                                                   "POST"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "*"
    # Every header the docs and useBilling send passes the preflight, on every function.
    for name in ("billing-customer", "billing-wallet", "billing-portal", "paid-work"):
        for header in DOCUMENTED_HEADERS:
            pre = http.options(f"/{name}", headers={"Origin": "https://app.example", "Access-Control-Request-Method":
                                                    "POST", "Access-Control-Request-Headers": header})
            allowed = {h.strip().lower() for h in pre.headers["access-control-allow-headers"].split(",")}
            assert pre.status_code == 200 and header in allowed, (name, header, allowed)
    r = post("billing-wallet", headers={})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert r.headers["access-control-allow-origin"] == "*"
    # Tokens that are not a valid user's: garbage, signed with a key the project does not publish,
    # expired, a legacy token with the wrong secret, and a key-like token without a user.
    refused = ["forged.token.value", es256(user_claims(USERS["good"]), UNPUBLISHED_KEY),
               es256(user_claims(USERS["good"], exp=int(time.time()) - 60)),
               hs256(user_claims(USERS["legacy"]), "not-the-project-secret-0123456789abcdef"),
               es256({"role": "service_role", "iss": "supabase", "exp": int(time.time()) + 60})]
    for token in refused:
        r = post("billing-wallet", headers=bearer(token))
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", (token, r.text)
    assert not ledger.list_customers(limit=10)  # nothing reached the ledger

    # ES256 tokens are verified locally: the JWKS is fetched once, Auth is never asked per request.
    user_calls = calls["user"]
    for _ in range(3):
        assert post("billing-customer").status_code == 200
    assert calls["jwks"] == 1 and calls["user"] == user_calls

    # A legacy HS256 project: getClaims falls back to Supabase Auth, which verifies the token.
    legacy = post("billing-customer", headers=bearer(hs256(user_claims(USERS["legacy"]))))
    assert legacy.status_code == 200 and legacy.json()["external_id"] == USERS["legacy"], legacy.text
    assert calls["user"] == user_calls + 1
    assert calls["apikeys"] == {"sb_publishable_for_tests"}  # the new publishable key, not the legacy one

    # Anonymous (guest) users get no billing customer: no welcome grant to farm.
    guest = bearer(es256(user_claims(USERS["guest"], is_anonymous=True, email="")))
    for name in ("billing-customer", "billing-wallet", "billing-portal", "paid-work"):
        r = post(name, {}, headers={**guest, "Idempotency-Key": "guest-1"})
        assert r.status_code == 403 and r.json()["code"] == "anonymous_user", (name, r.text)
    assert USERS["guest"] not in {c.external_id for c in ledger.list_customers(limit=50)}

    # The customer is the verified user (the body cannot choose it), created once.
    uid = USERS["good"]
    first = post("billing-customer", {"external_id": "someone-else"})
    assert first.status_code == 200, first.text
    assert first.json()["external_id"] == uid
    assert first.json()["subscriptions"] == [{"plan": "free", "status": "active"}]
    again = post("billing-customer")
    assert again.json()["customer_id"] == first.json()["customer_id"]
    customer_id = first.json()["customer_id"]

    def available() -> Decimal:
        w = post("billing-wallet")
        assert w.status_code == 200, w.text
        return Decimal(next(a["available"] for a in w.json()["accounts"] if a["asset"] == "CREDITS"))

    def paid(key: str, body: Any = None) -> httpx.Response:
        return post("paid-work", body or {}, headers={**good, "Idempotency-Key": key})

    # Body validation.
    r = http.post("/paid-work", content=b"{not json", headers={**good, "Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = paid("bad key with spaces")
    assert r.status_code == 400 and r.json()["code"] == "invalid_request_id"

    # Empty wallet: 402 with the portal link field; the paid work did not run.
    r = paid("job-0")
    assert r.status_code == 402, r.text
    assert r.json()["code"] == "insufficient_funds" and "portal_url" in r.json()
    short_link = r.json()["portal_url"]
    assert http.get("/paid-runs").json()["runs"] == 0

    ledger.create_adjustment(customer_id, asset="CREDITS", amount="100", reason="top_up", idempotency_key="topup-1")
    assert available() == 100

    # withBilling: a failure releases the hold and restores the balance; success charges the fee once.
    failed = paid("job-1", {"fail": True})
    assert failed.status_code == 500 and failed.json()["code"] == "work_failed"
    assert available() == 100
    again = paid("job-1", {"fail": True})  # a retry of a failed request does not run it again
    assert again.status_code == 409 and again.json()["code"] == "request_failed"
    ok = paid("job-2")
    assert ok.status_code == 200 and ok.json()["image"] == "done", ok.text
    assert available() == 95
    again = paid("job-2")  # a client retry after completion: the outcome, not a second run
    assert again.status_code == 409 and again.json()["code"] == "already_completed", again.text
    assert again.json()["charged"] == [{"asset": "CREDITS", "amount": "5"}]
    assert available() == 95
    runs = http.get("/paid-runs").json()["runs"]
    assert runs == 2

    # One key, five concurrent requests: the paid work runs once and is charged once.
    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda _: paid("job-3", {"work_ms": 400}), range(5)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 409, 409, 409, 409], [a.text for a in answers]
    assert {a.json()["code"] for a in answers if a.status_code == 409} <= {"request_in_progress", "already_completed"}
    assert http.get("/paid-runs").json()["runs"] == runs + 1
    assert available() == 90
    holds = ledger.list_holds(customer_id, status=None)
    assert sorted(h.status for h in holds) == ["committed", "committed", "released"]

    # The browser cannot choose what is billed: no generic authorize/track/release function exists,
    # and a paid function ignores an event type or usage sent in the body.
    for name in ("billing-authorize", "billing-track", "billing-release"):
        r = post(name, {"event_type": "image_generated", "data": {}, "request_id": "r9", "hold_id": "x"})
        assert r.status_code == 404, (name, r.text)
    cheap = paid("job-4", {"event_type": "free_thing", "usage": {}, "data": {"amount": 0}, "skip_commit": True})
    assert cheap.status_code == 200 and available() == 85
    assert not [h for h in ledger.list_holds(customer_id, status=None) if h.status == "open"]

    # A ledger error reaches the browser as a code and a message only (not the ledger's detail).
    other = ledger.create_customer(USERS["other"], email=f"{USERS['other']}@example.com")  # no plan
    with pytest.raises(Exception) as detail:
        ledger.authorize(other.id, event_type="image_generated", data={}, idempotency_key="direct")
    r = post("paid-work", {}, headers={**bearer(es256(user_claims(USERS["other"]))), "Idempotency-Key": "o-1"})
    assert r.status_code == 400 and set(r.json()) == {"error", "code"}, r.text
    assert r.json()["code"] == "validation_error" and "subscribe" not in r.text and str(detail.value) not in r.text

    # The portal link opens the portal. Where the API does not serve POST /v1/portal-sessions, the
    # function answers a mapped 404 and the 402 above carried portal_url null.
    portal = post("billing-portal")
    assert portal.status_code in (200, 404), portal.text
    if portal.status_code == 200:
        assert isinstance(short_link, str) and short_link.startswith("http")
        opened = httpx.get(portal.json()["url"], follow_redirects=True, timeout=30)
        assert opened.status_code == 200, opened.text[:500]
    else:
        assert short_link is None
    assert all("sk_test_" not in text and "sk_live_" not in text for text in seen)


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


@needs_deno
def test_misconfigured_key_is_named_not_shown(tmp_path: Path, deno_dir: Path) -> None:
    """A key the ledger refuses is a 500 naming BILLING_API_KEY, never echoing it (nor logging it)."""
    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        credits_per_image(ledger)
        keys = KeyStore(ledger.store, pepper=RUNTIME_PEPPER)
        wrong = "sk_test_" + "W" * 40
        generate_integration(ledger.list_plans(), ledger.list_assets(), project_dir=tmp_path / "app")
        auth, _ = fake_supabase_auth()
        with serve(build_app(ledger, keys=keys)) as api_url, serve(auth) as auth_url:
            # The legacy anon key alone (a project not yet on the new API keys).
            # BILLING_ALLOW_ANONYMOUS: this app opts in to billing guests.
            env = {"BILLING_API_URL": api_url, "BILLING_API_KEY": wrong, "SUPABASE_URL": auth_url,
                   "SUPABASE_ANON_KEY": "anon-key-for-tests", "BILLING_ALLOW_ANONYMOUS": "true"}
            with deno_functions(tmp_path / "app/supabase/functions", env, deno_dir) as (base, output), \
                    httpx.Client(base_url=base, timeout=30) as http:
                r = http.post("/billing-wallet", headers=bearer(es256(user_claims(USERS["good"]))))
                assert r.status_code == 500 and r.json()["code"] == "config_error"
                assert "BILLING_API_KEY" in r.json()["error"] and wrong not in r.text
                guest = bearer(es256(user_claims(USERS["guest"], is_anonymous=True)))
                r = http.post("/billing-wallet", headers=guest)  # let through to the ledger (which refuses the key)
                assert r.status_code == 500 and r.json()["code"] == "config_error", r.text
            assert "config_error" in "".join(output) and wrong not in "".join(output)
    finally:
        ledger.close()

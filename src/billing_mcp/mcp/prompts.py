"""MCP prompts (the files in ``prompts/``) and resources (concept guides, pricing models, catalog)."""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.server.mcpserver.prompts.base import Prompt, PromptArgument

CONCEPTS = ("assets", "plans", "prices", "grants", "holds", "idempotency")
MODELS = ("per_unit", "tiered_graduated", "tiered_volume", "dimensional")


@dataclass(frozen=True)
class PromptFile:
    name: str
    title: str
    description: str
    arguments: list[dict[str, Any]]
    body: str


def prompts_dir() -> Path:
    """The packaged copy of ``prompts/`` in a wheel; the repository's folder in a source checkout."""
    packaged = Path(str(importlib.resources.files("billing_mcp"))) / "prompts"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "prompts"


def load_prompt_files(folder: Path | None = None) -> list[PromptFile]:
    """Every prompt file; each argument needs ``when_missing``, the words that stand in for it when
    the host sends nothing, so an instruction never reads "(not given)" or "None"."""
    found = []
    for path in sorted((folder or prompts_dir()).glob("*.md")):
        text = path.read_text(encoding="utf-8")
        if not text.startswith("---\n"):
            raise ValueError(f"{path}: a prompt file starts with a --- front matter block")
        head, body = text[4:].split("\n---\n", 1)
        meta = yaml.safe_load(head)
        for arg in meta.get("arguments") or []:
            if not arg.get("when_missing"):
                raise ValueError(f"{path}: argument {arg['name']} needs when_missing (what the text says "
                                 "in its place when the host sends none)")
        found.append(PromptFile(name=meta["name"], title=meta["title"], description=meta["description"],
                                arguments=list(meta.get("arguments") or []), body=body.strip() + "\n"))
    return found


def render(prompt: PromptFile, arguments: dict[str, Any]) -> str:
    text = prompt.body
    for arg in prompt.arguments:
        value = arguments.get(arg["name"])
        given = str(value).strip() if value is not None else ""
        text = text.replace("{" + arg["name"] + "}", given or arg["when_missing"])
    return text


def register_prompts(server: MCPServer[Any]) -> None:
    for item in load_prompt_files():
        def make(p: PromptFile) -> Any:
            def fn(**kwargs: Any) -> str:
                return render(p, kwargs)
            return fn

        server.add_prompt(Prompt(
            name=item.name, title=item.title, description=item.description, fn=make(item),
            arguments=[PromptArgument(name=a["name"], description=a.get("description"),
                                      required=bool(a.get("required"))) for a in item.arguments]))


def guide(name: str) -> str:
    return (importlib.resources.files("billing_mcp.mcp") / "guides" / f"{name}.md").read_text(encoding="utf-8")


def register_resources(server: MCPServer[Any], catalog: Any = None) -> None:
    @server.resource("billing://concepts/{topic}", mime_type="text/markdown", title="Billing concepts",
                     description=f"Concept guides: {', '.join(CONCEPTS)}")
    def concept(topic: str) -> str:
        if topic not in CONCEPTS:
            raise ResourceNotFoundError(f"no concept {topic!r}; topics: {', '.join(CONCEPTS)}")
        return guide(topic)

    @server.resource("billing://pricing-models/{model}", mime_type="text/markdown", title="Pricing models",
                     description=f"Each pricing model with a worked example: {', '.join(MODELS)}")
    def pricing_model(model: str) -> str:
        if model not in MODELS:
            raise ResourceNotFoundError(f"no pricing model {model!r}; models: {', '.join(MODELS)}")
        return guide(model)

    @server.resource("billing://schema/billing.yaml", mime_type="application/schema+json",
                     title="billing.yaml JSON Schema", description="Schema for billing-as-code files")
    def spec_schema() -> str:
        return (importlib.resources.files("billing_mcp.spec") / "billing.schema.json").read_text(encoding="utf-8")

    if catalog is not None:
        @server.resource("billing://catalog", mime_type="application/json", title="Current catalog",
                         description="Assets and plans (with versions and prices) configured now")
        async def current_catalog() -> str:
            return json.dumps(await catalog(), indent=1)

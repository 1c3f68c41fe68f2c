"""The catalog file: YAML parsed with line numbers, validated with pydantic.

Every problem is reported as `<file>: line N: <field path>: <what is wrong>` so an
operator can fix a malformed file without guessing. Prices are read as exact
decimals (a YAML float `0.04` becomes Decimal("0.04"), never a binary float).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from quantized_runtime.sizes import accepted_sizes

Price = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
TokenCount = Annotated[int, Field(ge=1)]
Watermark = Literal["none", "c2pa", "provenance", "synthid"]
IMAGE_OUTPUT = "image"


class CatalogFileError(ValueError):
    """The catalog file cannot be read or is malformed; the message names line and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PerImageCost(_Strict):
    type: Literal["per_image"]
    usd_per_image: Price


class PerImageBySizeCost(_Strict):
    type: Literal["per_image_by_size"]
    usd_per_image: Annotated[dict[str, Price], Field(min_length=1)]


class PerImageBySizeQualityCost(_Strict):
    type: Literal["per_image_by_size_quality"]
    # The quality an upstream applies when the caller names none.
    default_quality: str | None = None
    usd_per_image: Annotated[
        dict[str, Annotated[dict[str, Price], Field(min_length=1)]], Field(min_length=1)]


class PerTokenCost(_Strict):
    type: Literal["per_token"]
    usd_per_million_input_tokens: Price
    usd_per_million_output_tokens: Price
    # Worst-case bounds for the quote before the call (image models only).
    worst_case_input_tokens: Annotated[int, Field(ge=0)] = 0
    worst_case_output_tokens_per_image: (
        TokenCount | dict[str, Annotated[dict[str, TokenCount], Field(min_length=1)]] | None) = None


Cost = Annotated[
    PerImageCost | PerImageBySizeCost | PerImageBySizeQualityCost | PerTokenCost,
    Field(discriminator="type"),
]


class SizeRange(_Strict):
    """Free sizes under rules: sides a multiple of `step` in [min_side, max_side],
    aspect ratio within 1:max_ratio..max_ratio:1, fewer pixels than max_pixels."""

    min_side: Annotated[int, Field(ge=1)]
    max_side: Annotated[int, Field(ge=1)]
    step: Annotated[int, Field(ge=1)]
    max_ratio: Annotated[float, Field(ge=1)]
    max_pixels: Annotated[int, Field(ge=1)]


def _accepted_sizes(entries: list[str]) -> list[str]:
    accepted_sizes(tuple(entries))
    return entries


class Constraints(_Strict):
    """What the model's upstream accepts: provider_svc fits each request to it
    (max_n is published only; the spec leaves it to the upstream)."""

    max_n: Annotated[int, Field(ge=1)] | None = None
    # Entries in the grammar of quantized_runtime.sizes.AcceptedSizes.
    sizes: Annotated[list[str], AfterValidator(_accepted_sizes)] = []
    size_range: SizeRange | None = None
    # The upstream's quality words.
    quality_values: list[str] = []
    notes: str = ""


class RouteEntry(_Strict):
    provider: str
    upstream_model_id: Annotated[str, Field(min_length=1)]
    # The provider_svc adapter family that speaks to the upstream (image models).
    adapter: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")] | None = None
    region: str = ""
    # Lower numbers are tried first.
    priority: int = 100
    active: bool


class ModelEntry(_Strict):
    id: Annotated[str, Field(min_length=1, pattern=r"^\S+$")]
    created: Annotated[int, Field(ge=0)]
    input_modalities: Annotated[list[str], Field(min_length=1)]
    output_modalities: Annotated[list[str], Field(min_length=1)]
    supported_features: list[str] = []
    watermark: Watermark
    constraints: Constraints = Constraints()
    cost: Cost
    routes: Annotated[list[RouteEntry], Field(min_length=1)]

    @property
    def outputs_images(self) -> bool:
        return IMAGE_OUTPUT in self.output_modalities


class ProviderEntry(_Strict):
    slug: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    name: str = ""
    # Rows of such a provider are active only where the sandbox is enabled.
    development_only: bool = False


def _as_text(value: Any) -> Any:
    return value if isinstance(value, str) else str(value)


class CatalogFile(_Strict):
    version: Annotated[str, BeforeValidator(_as_text), Field(min_length=1)]
    providers: Annotated[list[ProviderEntry], Field(min_length=1)]
    models: Annotated[list[ModelEntry], Field(min_length=1)]


DataPath = tuple[str | int, ...]


def load_catalog_file(path: Path | str) -> CatalogFile:
    """Read, parse and validate the catalog file, or raise CatalogFileError."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogFileError(f"{source}: cannot read the catalog file ({exc.strerror})") from None
    return parse_catalog_text(text, str(source))


def parse_catalog_text(text: str, source: str = "<catalog>") -> CatalogFile:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise CatalogFileError(f"{source}: {line}invalid YAML: {exc.problem or exc}") from None
    if root is None:
        raise CatalogFileError(f"{source}: the catalog file is empty")
    lines: dict[DataPath, int] = {}
    data = _construct(root, (), lines, source)
    try:
        catalog = CatalogFile.model_validate(data)
    except ValidationError as exc:
        raise CatalogFileError(_describe_validation(exc, data, lines, source)) from None
    problems = _semantic_problems(catalog)
    if problems:
        raise CatalogFileError("; ".join(
            _format_problem(source, lines, data, path, message) for path, message in problems))
    return catalog


_FLOAT_TAG = "tag:yaml.org,2002:float"


def _construct(node: yaml.Node, path: DataPath, lines: dict[DataPath, int], source: str) -> Any:
    """Build plain Python data from a YAML node, remembering the line of every path."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, (*path, "<key>"), {}, source)
            if key in result:
                raise CatalogFileError(
                    f"{source}: line {key_node.start_mark.line + 1}: "
                    f"{_dotted((*path, key))}: duplicate key")
            result[key] = _construct(value_node, (*path, key), lines, source)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, index), lines, source) for index, item in enumerate(node.value)]
    if node.tag == _FLOAT_TAG:
        try:
            return Decimal(node.value.replace("_", ""))
        except InvalidOperation:
            pass  # .inf / .nan: let pydantic reject the float
    # A fresh constructor per scalar: the shared one would cache every node it saw.
    return yaml.constructor.SafeConstructor().construct_object(node)


def _describe_validation(exc: ValidationError, data: Any, lines: dict[DataPath, int], source: str) -> str:
    messages = []
    for error in exc.errors():
        path = _data_path(error["loc"], data)
        messages.append(_format_problem(source, lines, data, path, error["msg"]))
    return "; ".join(messages)


def _data_path(loc: tuple[Any, ...], data: Any) -> DataPath:
    """The pydantic location without union tags, as a path into the YAML data."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # a discriminated union's tag, not a key of the file
        path.append(part)
        node = node.get(part) if isinstance(node, dict) else (
            node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
    return tuple(path)


def _format_problem(source: str, lines: dict[DataPath, int], data: Any, path: DataPath,
                    message: str) -> str:
    probe = tuple(path)
    while probe not in lines and probe:
        probe = probe[:-1]
    line = lines.get(probe)
    where = f"line {line}: " if line is not None else ""
    return f"{source}: {where}{_dotted(path) or '<root>'}{_model_hint(data, path)}: {message}"


def _model_hint(data: Any, path: DataPath) -> str:
    """Name the model an error sits in, so `models[7]` needs no counting."""
    if len(path) < 3 or path[0] != "models" or not isinstance(path[1], int) or not isinstance(data, dict):
        return ""
    models = data.get("models")
    if not isinstance(models, list) or path[1] >= len(models) or not isinstance(models[path[1]], dict):
        return ""
    model_id = models[path[1]].get("id")
    return f" (model '{model_id}')" if isinstance(model_id, str) else ""


def _dotted(path: DataPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _semantic_problems(catalog: CatalogFile) -> list[tuple[DataPath, str]]:
    problems: list[tuple[DataPath, str]] = []
    slugs: set[str] = set()
    for index, provider in enumerate(catalog.providers):
        if provider.slug in slugs:
            problems.append((("providers", index, "slug"), f"duplicate provider slug '{provider.slug}'"))
        slugs.add(provider.slug)
    model_ids: set[str] = set()
    for index, model in enumerate(catalog.models):
        at: DataPath = ("models", index)
        if model.id in model_ids:
            problems.append(((*at, "id"), f"duplicate model id '{model.id}'"))
        model_ids.add(model.id)
        prefix = model.id.split("/", 1)[0]
        if "/" in model.id and prefix in slugs:
            problems.append(((*at, "id"), f"model id '{model.id}' starts with the provider slug '{prefix}/'"))
        seen_routes: set[str] = set()
        for route_index, route in enumerate(model.routes):
            route_at = (*at, "routes", route_index, "provider")
            if route.provider not in slugs:
                problems.append((route_at, f"unknown provider '{route.provider}' "
                                           f"(declared: {', '.join(sorted(slugs))})"))
            if model.outputs_images and route.adapter is None:
                problems.append(((*at, "routes", route_index),
                                 "an image model's route needs the adapter that serves it"))
            if route.provider in seen_routes:
                problems.append((route_at, f"provider '{route.provider}' listed twice for '{model.id}'"))
            seen_routes.add(route.provider)
        cost = model.cost
        if isinstance(cost, PerImageBySizeQualityCost) and cost.default_quality is not None \
                and cost.default_quality not in cost.usd_per_image:
            problems.append(((*at, "cost", "default_quality"),
                             f"'{cost.default_quality}' is not a quality of usd_per_image"))
        if isinstance(cost, PerTokenCost) and model.outputs_images \
                and cost.worst_case_output_tokens_per_image is None:
            problems.append(((*at, "cost", "worst_case_output_tokens_per_image"),
                             "required for a token-priced image model (the quote's worst case)"))
    return problems

"""Decoding app bodies: raw bytes -> JSON value -> `AppDefinition` / `AppUpdate`.

This is where an app definition enters the program (STYLE.md: "validate once,
where data enters").  Marathon parses bodies with play-json readers generated
from its RAML types, so a body of the wrong *shape* is answered with 422
`Invalid JSON` and play-json error keys (`error.expected.jsstring`,
`error.path.missing`, `error.min`, ...) at a JSON path such as
`/container/portMappings(0)/hostPort` (SPEC.md 1.2, 2.1 step 1).

msgspec does the parsing; this module

* reads the body (`decode_json`: empty -> `EmptyBody`, malformed -> `MalformedJson`),
* makes the JSON value look the way play-json would read it before msgspec
  sees it: `null` in an optional field means "absent", and an integral float
  (`2.0`) is an acceptable integer,
* translates msgspec's (single, first) error into a play-json key and path, and
* checks the RAML constraints that msgspec `Meta` cannot express on the shared
  models (full-match patterns of path ids and names, required fields of the
  volume and discovery-port variants).

It also owns the deprecated forms of the API (`ports`, `uris`, `ipAddress`,
`container.docker.network`, `container.docker.portMappings`): the rules on how
they may be combined and their translation into canonical fields (SPEC.md 2.1
steps 2-3, 2.5), for apps and for partial updates alike.

Semantic rules (SPEC.md 2.6) and field defaults are `app_rules`' business.
"""

from __future__ import annotations

import itertools
import re
from array import array
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, structs
from msgspec import inspect as mi

from ..errors import EmptyBody, IllegalArgument, InvalidJson, MalformedJson, Violation
from . import pathid
from .app import (
    AppDefinition,
    AppUpdate,
    Container,
    Fetch,
    HealthCheck,
    Network,
    PortDefinition,
    PortMapping,
    ReadinessCheck,
    Residency,
)

__all__ = [
    "decode_app",
    "decode_app_update",
    "decode_json",
    "deprecated_violations",
    "json_depth_exceeds",
    "json_path",
    "migrate_app",
    "migrate_update",
    "raml_violations",
]


# -- raw bytes ------------------------------------------------------------------


# Deeper JSON than this is refused (400 Invalid JSON).  Everything that
# walks a decoded body or the group tree recurses, and Python's stack is
# about 1,000 frames: 128 is serde_json's default limit, far above any real
# definition (an app is 6 levels deep, each group level adds 2).
MAX_JSON_DEPTH = 128
_TOO_DEEP = f"Document nesting depth exceeds the maximum allowed ({MAX_JSON_DEPTH})"
_ESCAPE = re.compile(rb"\\.", re.S)
_STRING = re.compile(rb'"[^"]*"')
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_SQUARE = bytes.maketrans(b"{}", b"[]")
_NESTING_STEP = bytes.maketrans(b"[]", bytes([1, 255]))  # +1 / -1 as signed bytes


def json_depth_exceeds(raw: bytes | bytearray, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if arrays/objects in the JSON text `raw` nest deeper than `limit`.

    Linear, in C loops (about 0.2 s for 10 MB of nothing but brackets and
    short strings, nothing for a body with fewer than `limit` brackets):
    escapes and strings are cut out, the brackets that remain are counted
    up and down.  Text that is not JSON gets some answer; the parser then
    has its say.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)
    # Quotes left over belong to an unterminated string: the parser refuses it.
    brackets = _STRING.sub(b"", raw.translate(None, _NOT_STRUCTURE)).translate(_SQUARE, b'"')
    if b"[" * (limit + 1) in brackets:
        return True  # the usual attack (`[[[[...`), answered without counting
    depth = max(itertools.accumulate(array("b", brackets.translate(_NESTING_STEP))), default=0)
    return depth > limit


def decode_json(body: bytes | bytearray | memoryview | str) -> Any:
    """Parse a request body as JSON, whatever its Content-Type said.

    An empty or whitespace-only body raises `EmptyBody` (400 "Please specify
    data in JSON format"); text that is not JSON, or that nests deeper than
    `MAX_JSON_DEPTH`, raises `MalformedJson` (400 "Invalid JSON" with the
    parser's message as a string).  A `bytes` body is not copied.
    """
    raw = body.encode() if isinstance(body, str) else bytes(body) if isinstance(body, memoryview) else body
    if not raw or raw.isspace():
        raise EmptyBody()
    if json_depth_exceeds(raw):
        raise MalformedJson(_TOO_DEEP)
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise MalformedJson(str(exc)) from None
    except RecursionError:  # a deep document on an already deep stack
        raise MalformedJson(_TOO_DEEP) from None


# -- play-json reading conventions ----------------------------------------------------


def _type_info(tp: type) -> mi.Type:
    info = _TYPE_INFO.get(tp)
    if info is None:
        info = _TYPE_INFO[tp] = mi.type_info(tp)
    return info


_TYPE_INFO: dict[type, mi.Type] = {}
# StructType.cls -> {wire name: (field type, required)}
_FIELDS: dict[type, dict[str, tuple[mi.Type, bool]]] = {}


def _fields(t: mi.StructType) -> dict[str, tuple[mi.Type, bool]]:
    fields = _FIELDS.get(t.cls)
    if fields is None:
        fields = _FIELDS[t.cls] = {f.encode_name: (f.type, f.required) for f in t.fields}
    return fields


def _branch(value: Any, union: mi.UnionType) -> mi.Type | None:
    """The member of a union that `value` will be read as, if it needs preparing."""
    types = [t for t in union.types if not isinstance(t, mi.NoneType)]
    if isinstance(value, dict):
        wanted: tuple[type, ...] = (mi.StructType, mi.DictType)
    elif isinstance(value, list):
        wanted = (mi.ListType,)
    elif isinstance(value, float) and not any(isinstance(t, mi.FloatType) for t in types):
        wanted = (mi.IntType,)
    else:
        return None
    return next((t for t in types if isinstance(t, wanted)), None)


def _prepare(value: Any, t: mi.Type) -> Any:
    """Return `value` as play-json would see it for type `t` (never mutates).

    * `null` in an optional object field is the same as the field being absent
      (play-json's `readNullable` / `readWithDefault`); a required field keeps
      its `null` so the error names the expected type.
    * An integral JSON number (`2.0`) is a valid integer (play-json reads
      `BigDecimal`s that fit); `2.5` is still an error.
    * Unknown object properties are dropped (Marathon ignores them).
    """
    if isinstance(t, mi.UnionType):
        branch = _branch(value, t)
        if branch is None:
            return value
        t = branch
    if isinstance(t, mi.StructType):
        if not isinstance(value, dict):
            return value
        fields = _fields(t)
        out = {}
        for key, item in value.items():
            spec = fields.get(key)
            if spec is None:
                continue
            ftype, required = spec
            if item is None and not required:
                continue
            out[key] = _prepare(item, ftype)
        return out
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        if isinstance(value, list):
            return [_prepare(item, t.item_type) for item in value]
        return value
    if isinstance(t, mi.DictType):
        if isinstance(value, dict):
            return {k: _prepare(v, t.value_type) for k, v in value.items()}
        return value
    if isinstance(t, mi.IntType) and type(value) is float and value.is_integer():
        return int(value)
    return value


# -- msgspec error -> play-json violation --------------------------------------------

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_TYPE = re.compile(r"^Expected `(?P<types>[^`]+)`, got `(?P<got>[^`]+)`$")
_LENGTH = re.compile(r"^Expected `[^`]+` of length (?P<op>[<>]=?) \S+$")
_PATTERN = re.compile(r"^Expected `[^`]+` matching regex ")
_RANGE = re.compile(r"^Expected `[^`]+` (?P<op>[<>]=?) \S+$")
_TOKEN = re.compile(r"\.(?P<key>[^.\[]+)|\[(?P<idx>\d+)\]|\[(?P<any>\.\.\.)\]")

_JS_TYPES = {
    "str": "jsstring",
    "int": "jsnumber",
    "float": "jsnumber",
    "bool": "jsboolean",
    "object": "jsobject",
    "array": "jsarray",
    "null": "jsnull",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def json_path(parts: list[str | int]) -> str:
    """Marathon's rendering of a JSON path: keys joined by `/`, indexes as `(n)`."""
    out = ""
    for p in parts:
        out += f"({p})" if isinstance(p, int) else f"/{p}"
    return out or "/"


def _tokens(path: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for m in _TOKEN.finditer(path[1:]):
        if m["key"] is not None:
            out.append(("key", m["key"]))
        elif m["idx"] is not None:
            out.append(("idx", int(m["idx"])))
        else:
            out.append(("any", None))
    return out


def _concrete(value: Any, tokens: list[tuple[str, Any]], leaf_ok) -> list[str | int] | None:
    """Fill in the dict keys msgspec elides as `[...]`: the first entry (in
    document order, which is the order msgspec checked them in) whose leaf
    is the one that failed."""
    if not tokens:
        return [] if leaf_ok(value) else None
    (kind, arg), rest = tokens[0], tokens[1:]
    if kind == "key":
        if isinstance(value, dict) and arg in value:
            sub = _concrete(value[arg], rest, leaf_ok)
            return None if sub is None else [arg, *sub]
        return None
    if kind == "idx":
        if isinstance(value, list) and arg < len(value):
            sub = _concrete(value[arg], rest, leaf_ok)
            return None if sub is None else [arg, *sub]
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = _concrete(item, rest, leaf_ok)
            if sub is not None:
                return [key, *sub]
    return None


def _translate(message: str, value: Any) -> Violation:
    m = _AT.match(message)
    assert m is not None  # the pattern matches any text
    msg, raw_path = m["msg"], m["path"] or "$"
    tokens = _tokens(raw_path)
    extra: list[str | int] = []
    leaf_ok = _always

    if mm := _MISSING.match(msg):
        field = mm["field"]
        key, extra = "error.path.missing", [field]
        leaf_ok = lambda v: isinstance(v, dict) and field not in v  # noqa: E731
    elif mm := _TYPE.match(msg):
        first = next((t for t in mm["types"].split(" | ") if t != "null"), "null")
        key = "error.expected." + _JS_TYPES.get(first, first)
        got = mm["got"]
        leaf_ok = lambda v: _json_type(v) == got  # noqa: E731
    elif mm := _LENGTH.match(msg):
        key = "error.minLength" if mm["op"].startswith(">") else "error.maxLength"
    elif _PATTERN.match(msg):
        key = "error.pattern"
    elif mm := _RANGE.match(msg):
        key = "error.min" if mm["op"].startswith(">") else "error.max"
    elif msg.startswith("Invalid enum value"):
        key = "error.unknown.enum.literal"
    else:
        key = msg

    parts = _concrete(value, tokens, leaf_ok)
    if parts is None:
        parts = _concrete(value, tokens, _always)
    if parts is None:  # cannot happen for errors msgspec found in `value`
        parts = ["..." if kind == "any" else arg for kind, arg in tokens]
    return Violation(json_path(parts + extra), key)


def _always(_: Any) -> bool:
    return True


# -- RAML constraints msgspec cannot express on the shared models ---------------------

# strings.LegacyName (port definition and port mapping names, discovery ports).
_LEGACY_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Network names: like strings.Name but with `_` (SPEC.md 2.5), at most 63 chars.
_NETWORK_NAME = re.compile(r"[a-z0-9]([-a-z0-9_]*[a-z0-9])?")
_SEGMENT = re.compile(pathid.ID_SEGMENT_REGEX)


def _raml_path_id_ok(raw: str) -> bool:
    # Equivalent to the RAML PathId pattern
    # ^(\/?((\.\.)|(<label>\.)*<label>)?($|\/))+$ : `/`-separated parts, each
    # empty, `..` or a dotted label; checked per part to stay linear-time.
    return all(p in ("", "..") or _SEGMENT.match(p) for p in raw.split("/"))


class DiscoveryPort(Struct, rename="camel", kw_only=True, frozen=True):
    """RAML IpDiscoveryPort: one of the deprecated `ipAddress.discovery.ports`."""

    name: Annotated[str, Meta(min_length=1)]
    number: Annotated[int, Meta(ge=0, le=65535)] = 0
    protocol: Literal["tcp", "udp", "udp,tcp"] = "tcp"
    labels: dict[str, str] = {}


def discovery_ports(ip_address: Any) -> list[DiscoveryPort]:
    """The typed `discovery.ports` of a decoded (deprecated) `ipAddress`."""
    if ip_address in (UNSET, None) or ip_address.discovery is UNSET:
        return []
    info = _type_info(DiscoveryPort)
    return [msgspec.convert(_prepare(p, info), DiscoveryPort) for p in ip_address.discovery.ports]


def raml_violations(app: Struct) -> list[Violation]:
    """RAML constraints of `App`/`AppUpdate` that the msgspec models leave out.

    Works on both (absent `AppUpdate` fields are `UNSET` and skipped).
    """
    out: list[Violation] = []

    def check_path_id(value: str, path: str) -> None:
        if not value:
            out.append(Violation(path, "error.minLength"))
        elif not _raml_path_id_ok(value):
            out.append(Violation(path, "error.pattern"))

    def check_name(
        value: Any, path: str, regex: re.Pattern[str], max_len: int | None = None
    ) -> None:
        if value is UNSET:
            return
        if not value:
            out.append(Violation(path, "error.minLength"))
        elif not regex.fullmatch(value):
            out.append(Violation(path, "error.pattern"))
        if max_len is not None and len(value) > max_len:
            out.append(Violation(path, "error.maxLength"))

    if isinstance(app.id, str):
        check_path_id(app.id, "/id")
    for i, dep in enumerate(items(app.dependencies)):
        check_path_id(dep, f"/dependencies({i})")
    for i, uri in enumerate(items(app.uris)):
        if not uri:
            out.append(Violation(f"/uris({i})", "error.minLength"))
        elif len(uri) > 1024:
            out.append(Violation(f"/uris({i})", "error.maxLength"))
    for i, pd in enumerate(items(app.port_definitions)):
        check_name(pd.name, f"/portDefinitions({i})/name", _LEGACY_NAME)
    for i, net in enumerate(items(app.networks)):
        check_name(net.name, f"/networks({i})/name", _NETWORK_NAME, 63)

    container = app.container
    if container not in (UNSET, None):
        for i, pm in enumerate(items(container.port_mappings)):
            check_name(pm.name, f"/container/portMappings({i})/name", _LEGACY_NAME)
        docker = container.docker
        if docker is not UNSET:
            for i, pm in enumerate(items(docker.port_mappings)):
                check_name(pm.name, f"/container/docker/portMappings({i})/name", _LEGACY_NAME)
            for i, param in enumerate(docker.parameters):
                if not param.key:
                    out.append(
                        Violation(f"/container/docker/parameters({i})/key", "error.minLength")
                    )
        for i, vol in enumerate(container.volumes):
            is_host = vol.persistent is UNSET and vol.external is UNSET and vol.secret is UNSET
            if is_host and vol.host_path is UNSET:
                out.append(Violation(f"/container/volumes({i})/hostPath", "error.path.missing"))
            if is_host and vol.mode is UNSET:
                out.append(Violation(f"/container/volumes({i})/mode", "error.path.missing"))

    ip = app.ip_address
    if ip not in (UNSET, None):
        if ip.network_name is not UNSET and not ip.network_name:
            out.append(Violation("/ipAddress/networkName", "error.minLength"))
        ports = ip.discovery.ports if ip.discovery is not UNSET else []
        for i, port in enumerate(ports):
            base = f"/ipAddress/discovery/ports({i})"
            try:
                typed = msgspec.convert(_prepare(port, _type_info(DiscoveryPort)), DiscoveryPort)
            except msgspec.ValidationError as exc:
                v = _translate(str(exc), port)
                out.append(Violation(base + ("" if v.path == "/" else v.path), v.message))
                continue
            check_name(typed.name, base + "/name", _LEGACY_NAME)
    return out


# -- shared helpers -------------------------------------------------------------------------


def given(value: Any) -> bool:
    """Present: neither `UNSET` nor `None`."""
    return value is not UNSET and value is not None


def items(value: Any) -> list[Any]:
    """An optional collection as a list (empty when absent)."""
    return list(value) if given(value) else []


def has_duplicates(values: Iterable[Any]) -> bool:
    """True if two of the values are equal (compared by their JSON form)."""
    seen = list(values)
    return len(seen) != len({msgspec.json.encode(v) for v in seen})


_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_URI_BAD_CHAR = re.compile(r"[\x00-\x20\x7f\"<>\\^`{|}]")
_URI_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def host_networking(networks: list[Network]) -> bool:
    """No networks, or only `host` ones."""
    return not any(n.mode != "host" for n in networks)


def bridge_host_ports(container: Container) -> Container:
    """Bridge mode: port mappings without `hostPort` get a dynamic one (`0`)."""
    if container.port_mappings is UNSET:
        return container
    mappings = [
        pm if pm.host_port is not UNSET else structs.replace(pm, host_port=0)
        for pm in container.port_mappings
    ]
    return structs.replace(container, port_mappings=mappings)


def uri_is_valid(uri: str) -> bool:
    """Roughly what `java.net.URI` accepts (Marathon: "URI has invalid syntax.")."""
    if _URI_BAD_CHAR.search(uri) or _URI_BAD_ESCAPE.search(uri) or uri.count("#") > 1:
        return False
    head = re.split(r"[/?#]", uri, maxsplit=1)[0]
    if ":" in head:
        scheme = head.split(":", 1)[0]
        return bool(_URI_SCHEME.fullmatch(scheme))
    return True


# -- entry points -------------------------------------------------------------------------


def _decode(obj: Any, tp: type) -> Any:
    prepared = _prepare(obj, _type_info(tp))
    try:
        result = msgspec.convert(prepared, tp)
    except msgspec.ValidationError as exc:
        raise InvalidJson([_translate(str(exc), prepared)]) from None
    problems = raml_violations(result)
    if problems:
        raise InvalidJson(problems)
    return result


def decode_app(obj: Any) -> AppDefinition:
    """A JSON value (from `decode_json`) -> `AppDefinition` (RAML `App`, defaults applied).

    Raises `InvalidJson` with play-json keys.  msgspec stops at the first
    shape error, so such a 422 carries one detail (RAML pattern checks that
    run afterwards may add several).
    """
    return _decode(obj, AppDefinition)


def decode_app_update(obj: Any) -> AppUpdate:
    """A JSON value -> `AppUpdate` (RAML `AppUpdate`: all optional, no defaults)."""
    return _decode(obj, AppUpdate)


# -- the deprecated API: checks and migration (SPEC.md 2.1 steps 2-3) -------------------

DEFAULT_PORT_DEFINITION = PortDefinition(port=0, name="default")
DEFAULT_PORT_MAPPING = PortMapping(container_port=0, name="default")
# `uris` ending like this are unpacked by the Mesos fetcher.
_EXTRACT_SUFFIXES = (
    ".tar",
    ".tar.gz",
    ".tar.bz2",
    ".tar.xz",
    ".gz",
    ".tgz",
    ".tbz2",
    ".txz",
    ".zip",
)


def _is_extract(uri: str) -> bool:
    return uri.endswith(_EXTRACT_SUFFIXES)


def deprecated_violations(app: Struct) -> list[Violation]:
    """Rules on the deprecated fields, checked before they are migrated.

    Works on `AppDefinition` and `AppUpdate` alike.
    """
    out: list[Violation] = []

    def add(path: str, message: str) -> None:
        out.append(Violation(path, message))

    container = app.container if given(app.container) else None
    docker = container.docker if container is not None and container.docker is not UNSET else None
    if docker is not None:
        if docker.credential is not UNSET:
            add("/container/docker/credential", "must be empty")
        if container.type == "MESOS":
            if docker.network is not UNSET:
                add("/container/docker/network", "must be empty")
            if docker.parameters:
                add("/container/docker/parameters", "must be empty")
            if docker.port_mappings is not UNSET:
                add("/container/docker/portMappings", "must be empty")
        names = [pm.name for pm in items(docker.port_mappings) if pm.name is not UNSET]
        if has_duplicates(names):
            add("/container/docker/portMappings", "Port names must be unique.")

    ip = app.ip_address if given(app.ip_address) else None
    if ip is not None and container is not None and container.type == "DOCKER":
        if ip.discovery is not UNSET:
            add("/ipAddress", "ipAddress/discovery is not allowed for Docker containers")

    uris = items(app.uris)
    for i, uri in enumerate(uris):
        if not uri_is_valid(uri):
            add(f"/uris({i})", "URI has invalid syntax.")
    if uris and items(app.fetch):
        add("/uris", "may not be set in conjunction with fetch")

    networks = items(app.networks)
    if docker is not None and docker.network is not UNSET and networks:
        add("/", "must not specify both container.docker.network and networks")
    if ip is not None and networks:
        add("/", "must not specify both networks and ipAddress")
    ports = items(app.ports)
    if has_duplicates(p for p in ports if p != 0):
        add("/", "ports must be unique")
    if ip is not None and (ports or items(app.port_definitions)):
        add("/", "cannot specify both an IP address and port")
    if given(app.ports) and given(app.port_definitions):
        if [pd.port for pd in app.port_definitions] != app.ports:
            add("/", "cannot specify both ports and port definitions")
    return out


def _translate_networks(
    ip: Any, docker_network: str | None, networks: list[Network] | None, bridge_name: str
) -> list[Network] | None:
    """`ipAddress` + `container.docker.network` -> `networks` (None: nothing said)."""
    if ip is None and docker_network is None:
        return networks
    if networks is not None:
        raise IllegalArgument("cannot mix deprecated and canonical network APIs")
    labels = ip.labels if ip is not None else UNSET
    if docker_network is None:
        # ipAddress alone: a container network, or the bridge if it is named so.
        if ip.network_name is not UNSET and ip.network_name == bridge_name:
            return [Network(mode="container/bridge", labels=labels)]
        return [Network(mode="container", name=ip.network_name, labels=labels)]
    if docker_network == "HOST":
        return [Network(mode="host")]
    if docker_network == "BRIDGE":
        return [Network(mode="container/bridge", labels=labels)]
    if docker_network == "USER":
        name = ip.network_name if ip is not None else UNSET
        return [Network(mode="container", name=name, labels=labels)]
    raise IllegalArgument(f"unsupported docker network type {docker_network}")


def _migrate_container(container: Container, ip: Any) -> Container:
    """Move `docker.portMappings` and `ipAddress.discovery.ports` into
    `container.portMappings`; drop `docker.network` (already translated)."""
    docker = container.docker
    if docker is not UNSET and docker.port_mappings is not UNSET:
        if container.port_mappings is UNSET:
            container = structs.replace(container, port_mappings=docker.port_mappings)
        elif docker.port_mappings:
            raise IllegalArgument("cannot specify both portMappings and docker.portMappings")
        docker = structs.replace(docker, port_mappings=UNSET)
    if docker is not UNSET and docker.network is not UNSET:
        docker = structs.replace(docker, network=UNSET)
    if docker is not container.docker:
        container = structs.replace(container, docker=docker)

    ports = discovery_ports(ip)
    if ports:
        if container.type != "MESOS":
            raise IllegalArgument(
                f"ipAddress.discovery.ports do not apply for container type {container.type}"
            )
        if container.port_mappings is not UNSET:
            raise IllegalArgument(
                "container.portMappings and ipAddress.discovery.ports must not both be set"
            )
        mappings = [
            PortMapping(container_port=p.number, name=p.name, protocol=p.protocol, labels=p.labels)
            for p in ports
        ]
        container = structs.replace(container, port_mappings=mappings)
    return container


def _with_default_port_index(hc: HealthCheck) -> HealthCheck:
    if hc.protocol != "COMMAND" and hc.port is UNSET and hc.port_index is UNSET:
        return structs.replace(hc, port_index=0)
    return hc


def _with_default_status_codes(rc: ReadinessCheck) -> ReadinessCheck:
    if rc.http_status_codes_for_ready:
        return rc
    return structs.replace(rc, http_status_codes_for_ready=[200])


def migrate_app(app: AppDefinition, bridge_name: str) -> AppDefinition:
    """Marathon's migration step for a full app (SPEC.md 2.1 step 3).

    Deprecated fields become canonical ones (`uris` -> `fetch`, `ports` ->
    `portDefinitions`, `ipAddress`/`docker.network` -> `networks`, legacy port
    mappings -> `container.portMappings`), and the defaults Marathon computes
    at this point are filled in: port definitions for host networking only,
    default port mappings for other networking, health-check `portIndex` 0,
    readiness status codes `[200]`, `residency` for resident apps.  The order
    of the container rules matters; it is Marathon's.  `bridge_name` is
    `--mesos_bridge_name`.  Raises `IllegalArgument` for contradictions
    Marathon only notices here.
    """
    fetch = list(app.fetch)
    uris = items(app.uris)
    if uris and not fetch:
        fetch = [Fetch(uri=u, extract=_is_extract(u)) for u in uris]

    container = app.container if given(app.container) else None
    ip = app.ip_address if given(app.ip_address) else None
    docker = container.docker if container is not None else UNSET
    docker_network = docker.network if docker is not UNSET and docker.network is not UNSET else None
    networks = (
        _translate_networks(ip, docker_network, items(app.networks) or None, bridge_name) or []
    )
    non_host = not host_networking(networks)

    if app.port_definitions is not UNSET:
        migrated_pds: list[PortDefinition] | None = list(app.port_definitions)
    elif given(app.ports):
        migrated_pds = [PortDefinition(port=p) for p in app.ports]
    else:
        migrated_pds = None
    if non_host:
        port_definitions: Any = UNSET
    else:
        port_definitions = migrated_pds if migrated_pds is not None else [DEFAULT_PORT_DEFINITION]

    if container is None and ip is not None:
        container = Container(type="MESOS")
    if container is not None:
        container = _migrate_container(container, ip)
        mappings = container.port_mappings
        if not networks or any(n.mode == "host" for n in networks):
            mappings = UNSET
        elif mappings is UNSET:
            mappings = [DEFAULT_PORT_MAPPING]
        if non_host:
            missing = len(migrated_pds or []) - len(items(mappings))
            if missing > 0:
                mappings = [*items(mappings), *(PortMapping() for _ in range(missing))]
        if mappings is not container.port_mappings:
            container = structs.replace(container, port_mappings=mappings)

    has_ports = bool(port_definitions) or bool(
        container is not None and items(container.port_mappings)
    )
    health_checks = app.health_checks
    if has_ports:
        health_checks = [_with_default_port_index(hc) for hc in health_checks]

    residency = app.residency
    resident = container is not None and any(v.persistent is not UNSET for v in container.volumes)
    if resident and residency is UNSET:
        residency = Residency()

    return structs.replace(
        app,
        fetch=fetch,
        uris=UNSET,
        networks=networks,
        ip_address=UNSET,
        container=container if container is not None else UNSET,
        port_definitions=port_definitions,
        ports=UNSET,
        health_checks=list(health_checks),
        residency=residency,
        readiness_checks=[_with_default_status_codes(rc) for rc in app.readiness_checks],
    )


def migrate_update(update: AppUpdate, bridge_name: str) -> AppUpdate:
    """Translate the deprecated fields of an update into canonical ones.

    No defaults are computed here: the merged app is normalized as a whole.
    """
    changes: dict[str, Any] = {"uris": UNSET, "ip_address": UNSET, "ports": UNSET}
    uris = items(update.uris)
    if uris and not items(update.fetch):
        changes["fetch"] = [Fetch(uri=u, extract=_is_extract(u)) for u in uris]

    ip = update.ip_address if given(update.ip_address) else None
    container = update.container if given(update.container) else None
    docker = container.docker if container is not None else UNSET
    docker_network = docker.network if docker is not UNSET and docker.network is not UNSET else None
    given_networks = update.networks if given(update.networks) else None
    networks = _translate_networks(ip, docker_network, given_networks, bridge_name)
    if networks is not None:
        changes["networks"] = networks

    if container is None and ip is not None:
        container = Container(type="MESOS")
    if container is not None:
        container = _migrate_container(container, ip)
        if networks and any(n.mode == "container/bridge" for n in networks):
            container = bridge_host_ports(container)
        changes["container"] = container

    if update.port_definitions is UNSET and given(update.ports):
        changes["port_definitions"] = [PortDefinition(port=p) for p in update.ports]
    if given(update.health_checks):
        changes["health_checks"] = [_with_default_port_index(hc) for hc in update.health_checks]
    if given(update.readiness_checks):
        changes["readiness_checks"] = [
            _with_default_status_codes(rc) for rc in update.readiness_checks
        ]
    return structs.replace(update, **changes)

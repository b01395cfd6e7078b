"""Renders the subset of kustomize that deploy/k8s uses, in pure Python, so CI needs no binary.

Supported kustomization fields, with kustomize's semantics:

- ``resources``: YAML files, or directories holding a kustomization (built first, recursively);
- ``namespace``: set on every namespaced object;
- ``labels``: ``pairs`` added to metadata.labels, and with ``includeTemplates`` to pod templates
  and volumeClaimTemplates (never to selectors);
- ``images``: ``newName`` / ``newTag`` / ``digest`` for containers whose image name matches;
- ``patches``: ``path`` to strategic-merge patches, each applied to the object of the same kind
  and name (lists of containers, env, volumes... merge by their Kubernetes merge keys);
- ``configMapGenerator`` / ``secretGenerator``: ``envs`` and ``literals``, ``behavior``
  create | merge | replace, and the content-hash name suffix with every reference to the
  generated object in pod specs rewritten to the suffixed name.

Anything outside this subset raises :class:`UnsupportedKustomization` rather than being
rendered wrongly. tests/unit/test_deploy_manifests.py also compares this renderer's output
with `kubectl kustomize` wherever kubectl is installed.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["POD_SPEC_PATHS", "KustomizeError", "UnsupportedKustomization", "render", "split_image"]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "patches",
    "configMapGenerator",
    "secretGenerator",
}
GENERATOR_FIELDS = {"name", "behavior", "envs", "literals"}
SECRET_GENERATOR_FIELDS = GENERATOR_FIELDS | {"type"}
LABELS_FIELDS = {"pairs", "includeTemplates", "includeSelectors"}
IMAGES_FIELDS = {"name", "newName", "newTag", "digest"}
PATCH_FIELDS = {"path"}

CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "Node",
    "PersistentVolume",
    "StorageClass",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "CSIDriver",
    "APIService",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
# Objects whose references kustomize rewrites in ways this renderer does not implement.
UNSUPPORTED_KINDS = {"RoleBinding", "ClusterRoleBinding"}

# Where a pod spec lives in each workload kind.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
# Where `labels: includeTemplates` adds labels, per kind.
TEMPLATE_LABEL_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Deployment": (("spec", "template", "metadata", "labels"),),
    "StatefulSet": (("spec", "template", "metadata", "labels"),),
    "DaemonSet": (("spec", "template", "metadata", "labels"),),
    "ReplicaSet": (("spec", "template", "metadata", "labels"),),
    "Job": (("spec", "template", "metadata", "labels"),),
    "CronJob": (
        ("spec", "jobTemplate", "metadata", "labels"),
        ("spec", "jobTemplate", "spec", "template", "metadata", "labels"),
    ),
}

ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class KustomizeError(Exception):
    """A kustomization that kustomize itself would reject."""


class UnsupportedKustomization(KustomizeError):
    """A valid kustomization that uses something outside the supported subset."""


@dataclass
class _Resource:
    obj: dict[str, Any]
    generated: bool = False  # gets a content-hash name suffix at the end of the build
    origin: str = ""

    @property
    def kind(self) -> str:
        return self.obj["kind"]

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def namespace(self) -> str | None:
        return self.obj["metadata"].get("namespace")

    def key(self) -> tuple[str, str, str | None, str]:
        group = self.obj["apiVersion"].rpartition("/")[0]
        return (group, self.kind, self.namespace, self.name)


@dataclass
class _Build:
    resources: list[_Resource] = field(default_factory=list)

    def find(self, kind: str, name: str, namespace: str | None = None) -> _Resource | None:
        matches = [
            r
            for r in self.resources
            if r.kind == kind and r.name == name and (namespace is None or r.namespace == namespace)
        ]
        if len(matches) > 1:
            raise KustomizeError(f"{kind}/{name} is ambiguous: {len(matches)} objects match")
        return matches[0] if matches else None

    def add(self, resource: _Resource) -> None:
        if any(r.key() == resource.key() for r in self.resources):
            raise KustomizeError(
                f"duplicate object {resource.kind}/{resource.name} from {resource.origin}"
            )
        self.resources.append(resource)


def render(path: str | Path) -> list[dict[str, Any]]:
    """Build the kustomization in directory `path`, like `kustomize build path`."""
    build = _build(Path(path).resolve(), stack=())
    _add_name_hashes(build)
    return [r.obj for r in build.resources]


# ------------------------------------------------------------------------------- the build


def _build(directory: Path, stack: tuple[Path, ...]) -> _Build:
    if directory in stack:
        raise KustomizeError(f"cycle in resources: {' -> '.join(map(str, stack + (directory,)))}")
    kustomization = _load_kustomization(directory)
    build = _Build()
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            for resource in _build(target, stack + (directory,)).resources:
                build.add(resource)
        elif target.is_file():
            for obj in _load_objects(target):
                build.add(_Resource(obj, origin=str(target)))
        else:
            raise KustomizeError(f"{directory}: resource {entry!r} does not exist")

    for generator in kustomization.get("configMapGenerator", []):
        _generate(build, directory, generator, "ConfigMap", GENERATOR_FIELDS)
    for generator in kustomization.get("secretGenerator", []):
        _generate(build, directory, generator, "Secret", SECRET_GENERATOR_FIELDS)

    # kustomize's fixed transformer order: patches, namespace, labels, images.
    for patch in kustomization.get("patches", []):
        _apply_patch_file(build, directory, patch)
    if "namespace" in kustomization:
        _set_namespace(build, kustomization["namespace"])
    for labels in kustomization.get("labels", []):
        _add_labels(build, labels)
    for image in kustomization.get("images", []):
        _set_image(build, image)
    return build


def _load_kustomization(directory: Path) -> dict[str, Any]:
    for name in KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            break
    else:
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise KustomizeError(f"{path}: not a mapping")
    unsupported = set(data) - SUPPORTED_FIELDS
    if unsupported:
        raise UnsupportedKustomization(f"{path}: unsupported fields {sorted(unsupported)}")
    if data.get("kind", "Kustomization") != "Kustomization":
        raise UnsupportedKustomization(f"{path}: kind {data['kind']!r} (only Kustomization)")
    return data


def _load_objects(path: Path) -> Iterator[dict[str, Any]]:
    for obj in yaml.safe_load_all(path.read_text()):
        if obj is None:
            continue
        if not isinstance(obj, dict) or not all(
            k in obj for k in ("apiVersion", "kind", "metadata")
        ):
            raise KustomizeError(f"{path}: every document needs apiVersion, kind and metadata")
        if not obj["metadata"].get("name"):
            raise KustomizeError(f"{path}: {obj['kind']} without metadata.name")
        if obj["kind"] in UNSUPPORTED_KINDS or obj["kind"].endswith("List"):
            raise UnsupportedKustomization(f"{path}: kind {obj['kind']}")
        yield obj


# ------------------------------------------------------------------------------- generators


def _generate(
    build: _Build, directory: Path, spec: dict[str, Any], kind: str, allowed: set[str]
) -> None:
    unsupported = set(spec) - allowed
    if unsupported:
        raise UnsupportedKustomization(
            f"{directory}: {kind} generator fields {sorted(unsupported)}"
        )
    name = spec.get("name")
    if not name:
        raise KustomizeError(f"{directory}: {kind} generator without a name")
    pairs: dict[str, str] = {}
    for env_file in spec.get("envs", []):
        for key, value in _read_env_file(directory / env_file):
            _put(pairs, key, value, f"{directory / env_file}")
    for literal in spec.get("literals", []):
        key, sep, value = literal.partition("=")
        if not sep or not ENV_NAME.match(key):
            raise KustomizeError(f"{directory}: literal {literal!r} is not KEY=VALUE")
        _put(pairs, key, _unquote(value), f"{directory} literals")

    behavior = spec.get("behavior", "create")
    existing = build.find(kind, name)
    if behavior == "create":
        if existing is not None:
            raise KustomizeError(
                f"{directory}: {kind}/{name} already exists; use behavior merge or replace"
            )
        build.add(
            _Resource(
                _generated_object(kind, name, pairs, spec), generated=True, origin=str(directory)
            )
        )
        return
    if behavior not in ("merge", "replace"):
        raise KustomizeError(f"{directory}: unknown generator behavior {behavior!r}")
    if existing is None or not existing.generated:
        raise KustomizeError(
            f"{directory}: behavior {behavior} but no generated {kind}/{name} to {behavior}"
        )
    data = dict(_decoded_data(existing.obj)) if behavior == "merge" else {}
    data.update(pairs)
    fresh = _generated_object(kind, name, data, spec)
    existing.obj["data"] = fresh["data"]
    if kind == "Secret" and "type" in spec:
        existing.obj["type"] = spec["type"]


def _put(pairs: dict[str, str], key: str, value: str, where: str) -> None:
    if key in pairs:
        raise KustomizeError(f"{where}: key {key} given twice")
    pairs[key] = value


def _read_env_file(path: Path) -> Iterator[tuple[str, str]]:
    if not path.is_file():
        raise KustomizeError(f"env file {path} does not exist")
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not ENV_NAME.match(key):
            raise KustomizeError(f"{path}:{number}: {key!r} is not a valid variable name")
        if not sep:
            # kustomize would read the value from its own environment: not reproducible.
            raise UnsupportedKustomization(
                f"{path}:{number}: {key} has no '=' (value from the environment)"
            )
        yield key, value


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _generated_object(
    kind: str, name: str, pairs: dict[str, str], spec: dict[str, Any]
) -> dict[str, Any]:
    if kind == "ConfigMap":
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": dict(pairs),
        }
    encoded = {k: _base64_lines(v) for k, v in pairs.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": spec.get("type", "Opaque"),
        "data": encoded,
    }


def _base64_lines(value: str) -> str:
    """Base64 the way kustomize writes Secret data: 70-column lines, each ending in a newline
    once the encoding reaches 70 characters (the API server ignores the newlines)."""
    encoded = base64.b64encode(value.encode()).decode()
    if len(encoded) < 70:
        return encoded
    return "".join(encoded[i : i + 70] + "\n" for i in range(0, len(encoded), 70))


def _decoded_data(obj: dict[str, Any]) -> dict[str, str]:
    data = obj.get("data") or {}
    if obj["kind"] == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in data.items()}
    return dict(data)


# ------------------------------------------------------------------------------- patches


def _apply_patch_file(build: _Build, directory: Path, entry: dict[str, Any]) -> None:
    if not isinstance(entry, dict) or set(entry) - PATCH_FIELDS or "path" not in entry:
        raise UnsupportedKustomization(
            f"{directory}: patches entries must be {{path: FILE}} only, got {entry!r}"
        )
    path = directory / entry["path"]
    if not path.is_file():
        raise KustomizeError(f"{directory}: patch {entry['path']!r} does not exist")
    for patch in yaml.safe_load_all(path.read_text()):
        if patch is None:
            continue
        if (
            not isinstance(patch, dict)
            or "kind" not in patch
            or not patch.get("metadata", {}).get("name")
        ):
            raise UnsupportedKustomization(
                f"{path}: only strategic-merge patches with kind and metadata.name"
            )
        meta = patch["metadata"]
        target = build.find(patch["kind"], meta["name"], meta.get("namespace"))
        if target is None:
            raise KustomizeError(f"{path}: patch target {patch['kind']}/{meta['name']} not found")
        body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
        target.obj = _merge(target.obj, body, target.kind, ())


def _merge_key(kind: str, path: tuple[str, ...]) -> str | None:
    """The strategic-merge key of the list at `path` ([] marks list items), or None: replace."""
    last = path[-1]
    inside_container = (
        len(path) >= 3
        and path[-2] == "[]"
        and path[-3] in ("containers", "initContainers", "ephemeralContainers")
    )
    if last in (
        "containers",
        "initContainers",
        "ephemeralContainers",
        "volumes",
        "imagePullSecrets",
    ):
        return "name"
    if inside_container:
        return {
            "env": "name",
            "volumeMounts": "mountPath",
            "ports": "containerPort",
            "volumeDevices": "devicePath",
        }.get(last)
    if last == "ports" and kind == "Service" and path == ("spec", "ports"):
        return "port"
    if last == "topologySpreadConstraints":
        return "topologyKey"
    return None


def _merge(base: Any, patch: Any, kind: str, path: tuple[str, ...]) -> Any:
    if isinstance(patch, dict):
        if any(str(k).startswith("$") for k in patch):
            raise UnsupportedKustomization(f"patch directive in {kind} at {'/'.join(path)}")
        if not isinstance(base, dict):
            return copy.deepcopy(patch)
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = _merge(merged[key], value, kind, path + (key,))
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(patch, list) and isinstance(base, list) and path:
        key = _merge_key(kind, path)
        if key is None:
            return copy.deepcopy(patch)
        # Strategic merge order: the patch's items first, in its order (merged into the base
        # item with the same key), then the base items the patch does not name.
        by_key = {b.get(key): b for b in base if isinstance(b, dict)}
        merged = []
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise KustomizeError(f"{kind}: item of {'/'.join(path)} lacks merge key {key!r}")
            original = by_key.get(item[key])
            merged.append(
                copy.deepcopy(item)
                if original is None
                else _merge(original, item, kind, path + ("[]",))
            )
        named = {item[key] for item in patch}
        merged.extend(
            copy.deepcopy(b) for b in base if not (isinstance(b, dict) and b.get(key) in named)
        )
        return merged
    return copy.deepcopy(patch)


# ------------------------------------------------------------------------------- transformers


def _set_namespace(build: _Build, namespace: str) -> None:
    for resource in build.resources:
        if resource.kind not in CLUSTER_SCOPED_KINDS:
            resource.obj["metadata"]["namespace"] = namespace


def _add_labels(build: _Build, entry: dict[str, Any]) -> None:
    unsupported = set(entry) - LABELS_FIELDS
    if unsupported:
        raise UnsupportedKustomization(f"labels fields {sorted(unsupported)}")
    if entry.get("includeSelectors"):
        raise UnsupportedKustomization(
            "labels.includeSelectors (selectors are immutable: keep them explicit)"
        )
    pairs = {str(k): str(v) for k, v in (entry.get("pairs") or {}).items()}
    for resource in build.resources:
        resource.obj["metadata"].setdefault("labels", {}).update(pairs)
        if not entry.get("includeTemplates"):
            continue
        for path in TEMPLATE_LABEL_PATHS.get(resource.kind, ()):
            _dig(resource.obj, path, create=True).update(pairs)
        if resource.kind == "StatefulSet":
            for claim in resource.obj["spec"].get("volumeClaimTemplates", []):
                claim.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _set_image(build: _Build, entry: dict[str, Any]) -> None:
    unsupported = set(entry) - IMAGES_FIELDS
    if unsupported or "name" not in entry:
        raise UnsupportedKustomization(f"images entry {entry!r}")
    for container in _containers(build):
        name, tag, digest = split_image(container.get("image", ""))
        if name != entry["name"]:
            continue
        name = entry.get("newName", name)
        if "digest" in entry:
            tag, digest = None, entry["digest"]
        elif "newTag" in entry:
            tag, digest = str(entry["newTag"]), None
        image = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
        container["image"] = image


def split_image(image: str) -> tuple[str, str | None, str | None]:
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _pod_specs(resources: list[_Resource]) -> Iterator[tuple[_Resource, dict[str, Any]]]:
    for resource in resources:
        path = POD_SPEC_PATHS.get(resource.kind)
        if path is None:
            continue
        spec = _dig(resource.obj, path)
        if spec is not None:
            yield resource, spec


def _containers(build: _Build) -> Iterator[dict[str, Any]]:
    for _, spec in _pod_specs(build.resources):
        for group in ("initContainers", "containers"):
            yield from spec.get(group, [])


def _dig(obj: dict[str, Any], path: tuple[str, ...], create: bool = False) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        if key not in obj:
            if not create:
                return None
            obj[key] = {}
        obj = obj[key]
    return obj


# ------------------------------------------------------------------------------- name hashes


def _add_name_hashes(build: _Build) -> None:
    renames: dict[tuple[str, str | None, str], str] = {}
    for resource in build.resources:
        if resource.generated:
            new_name = f"{resource.name}-{_content_hash(resource.obj)}"
            renames[(resource.kind, resource.namespace, resource.name)] = new_name
            resource.obj["metadata"]["name"] = new_name
    for resource, spec in _pod_specs(build.resources):
        for kind, holder, key in _name_references(spec):
            target = (kind, resource.namespace, holder.get(key))
            if target in renames:
                holder[key] = renames[target]


def _name_references(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(kind, mapping, key) for every ConfigMap or Secret name in a pod spec."""
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(group, []):
            for source in container.get("envFrom", []):
                yield "ConfigMap", source.get("configMapRef") or {}, "name"
                yield "Secret", source.get("secretRef") or {}, "name"
            for env in container.get("env", []):
                value_from = env.get("valueFrom") or {}
                yield "ConfigMap", value_from.get("configMapKeyRef") or {}, "name"
                yield "Secret", value_from.get("secretKeyRef") or {}, "name"
    for volume in spec.get("volumes", []):
        yield "ConfigMap", volume.get("configMap") or {}, "name"
        yield "Secret", volume.get("secret") or {}, "secretName"
        for source in (volume.get("projected") or {}).get("sources", []):
            yield "ConfigMap", source.get("configMap") or {}, "name"
            yield "Secret", source.get("secret") or {}, "name"


def _content_hash(obj: dict[str, Any]) -> str:
    """kustomize's name suffix: the first 10 hex digits of a sha256 over kind, type and data.

    kustomize's hasher also means to hash the name, but looks it up as the single key
    "metadata/name", which never exists, so it always hashes "" there; so do we, to match.
    """
    fields: dict[str, Any] = {"kind": obj["kind"], "name": "", "data": obj.get("data") or {}}
    if obj["kind"] == "Secret":
        fields["type"] = obj.get("type", "")
    # Go's encoding/json: sorted keys, no spaces, and <, >, & escaped for HTML.
    encoded = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        encoded = encoded.replace(char, escape)
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    # Avoid strings that could read as words or numbers, exactly as kustomize does.
    return digest.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))

"""What kubernetes-validate cannot see in examples/kubernetes: that the manifests fit each
other and lookout. Run by host/lookout/tests/e2e/integrations.rs with the Python tools'
interpreter (PyYAML comes with kubernetes-validate).

    python check_manifests.py DIR OUT_TOML

Checks the Service selects the Deployment's pods, the ServiceMonitor selects the Service and
names one of its ports, probes use lookout's health paths on a declared port, the container
runs as non-root on a read-only root filesystem with limits, every ConfigMap/Secret it uses
exists, and writes the ConfigMap's lookout.toml to OUT_TOML (for `lookout config check`).
Prints each problem and exits 1 if there are any.
"""

import pathlib
import sys

import yaml

directory, out_toml = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
docs = []
for path in sorted(directory.glob("*.yaml")):
    docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
by_kind = {}
for doc in docs:
    by_kind.setdefault(doc["kind"], []).append(doc)

problems = []


def need(condition, message):
    if not condition:
        problems.append(message)


def one(kind):
    found = by_kind.get(kind, [])
    need(len(found) == 1, f"expected one {kind}, found {len(found)}")
    return found[0] if found else {}


deployment, service = one("Deployment"), one("Service")
monitor, config_map, secret = one("ServiceMonitor"), one("ConfigMap"), one("Secret")
pod = deployment.get("spec", {}).get("template", {})
pod_labels = pod.get("metadata", {}).get("labels", {})
selector = service.get("spec", {}).get("selector", {})
need(selector and selector.items() <= pod_labels.items(),
     f"the Service selector {selector} does not select the pods {pod_labels}")
need(deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(),
     "the Deployment's selector does not match its own pods")
service_ports = {p.get("name") for p in service["spec"]["ports"]}
monitor_labels = monitor.get("spec", {}).get("selector", {}).get("matchLabels", {})
need(monitor_labels.items() <= service["metadata"].get("labels", {}).items(),
     f"the ServiceMonitor selector {monitor_labels} does not select the Service")
for endpoint in monitor["spec"]["endpoints"]:
    need(endpoint.get("port") in service_ports,
         f"the ServiceMonitor scrapes port {endpoint.get('port')!r}, not one of {service_ports}")
    need(endpoint.get("path") == "/metrics", "the ServiceMonitor must scrape /metrics")

spec = pod["spec"]
need(spec.get("securityContext", {}).get("runAsNonRoot") is True, "the pod must run as non-root")
(container,) = spec["containers"]
container_ports = {p["name"] for p in container["ports"]}
for port in service["spec"]["ports"]:
    need(port["targetPort"] in container_ports,
         f"the Service targets {port['targetPort']!r}, not a container port")
health_paths = {"/livez", "/readyz", "/health", "/health/ready"}
for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
    get = container.get(probe, {}).get("httpGet", {})
    need(get.get("path") in health_paths, f"{probe} must GET one of {sorted(health_paths)}")
    need(get.get("port") in container_ports, f"{probe} uses an undeclared port {get.get('port')!r}")
need(container["readinessProbe"]["httpGet"]["path"] in {"/readyz", "/health/ready"},
     "readiness must use /readyz or /health/ready (liveness-only paths would keep a not-ready pod in)")
security = container.get("securityContext", {})
need(security.get("readOnlyRootFilesystem") is True, "the root filesystem must be read-only")
need(security.get("allowPrivilegeEscalation") is False, "no privilege escalation")
need("ALL" in security.get("capabilities", {}).get("drop", []), "drop every capability")
limits = container.get("resources", {}).get("limits", {})
need("memory" in limits and "cpu" in limits, "set memory and cpu limits")

config_names = {config_map["metadata"]["name"]}
secret_names = {secret["metadata"]["name"]}
for volume in spec.get("volumes", []):
    if "configMap" in volume:
        need(volume["configMap"]["name"] in config_names, f"volume {volume['name']}: no such ConfigMap")
for env in container.get("env", []):
    ref = env.get("valueFrom", {}).get("secretKeyRef")
    if ref:
        need(ref["name"] in secret_names, f"env {env['name']}: no such Secret")
        need(ref["key"] in secret.get("stringData", {}) or ref["key"] in secret.get("data", {}),
             f"env {env['name']}: the Secret has no key {ref['key']!r}")
mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
args = container.get("args", [])
need("--config" in args, "start lookout with --config")
config_path = pathlib.PurePosixPath(args[args.index("--config") + 1]) if "--config" in args else None
need(config_path is not None and str(config_path.parent) in mounts,
     f"--config {config_path} is not in a mounted folder")
need(config_path is not None and config_path.name in config_map.get("data", {}),
     f"the ConfigMap has no {config_path.name if config_path else '?'}")
if config_path is not None and config_path.name in config_map.get("data", {}):
    out_toml.write_text(config_map["data"][config_path.name])

for problem in problems:
    print(problem)
sys.exit(1 if problems else 0)

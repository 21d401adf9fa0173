#!/usr/bin/python3
"""conf/examples/kubernetes and conf/examples/systemd agree with themselves.

  examples_deploy_check.py SOURCE_DIR PREFORKD_BINARY

Kubernetes: both files parse (python3-yaml); the ConfigMap's preforkd.yaml
passes `preforkd -t` (its app folder made a temporary one); the probes are
GET /healthz (liveness) and GET /readyz (readiness) on the port of
supervisor.metrics; the container port is the program's listen port; the
container runs preforkd on the mounted file; there is a preStop; and
terminationGracePeriodSeconds is above preStop's sleep plus
shutdown_timeout; workers is the container's CPU limit. systemd: the drop-in keeps TimeoutStopSec above the
shipped shutdown_timeout and resets ExecStart before setting it.
Exit 77 (skipped) without python3-yaml.
"""
import configparser
import os
import re
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    print("SKIPPED: python3-yaml is not installed")
    sys.exit(77)

src, preforkd = sys.argv[1], sys.argv[2]
k8s = os.path.join(src, "conf/examples/kubernetes")
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def seconds(duration):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(duration))
    assert m, "not a duration: %r" % (duration,)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


with open(os.path.join(k8s, "configmap.yaml")) as f:
    configmap = yaml.safe_load(f)
with open(os.path.join(k8s, "deployment.yaml")) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
deployment = next(d for d in docs if d["kind"] == "Deployment")
service = next((d for d in docs if d["kind"] == "Service"), None)

text = configmap["data"]["preforkd.yaml"]
config = yaml.safe_load(text)
sup = config["supervisor"]
metrics_port = int(sup["metrics"].rsplit(":", 1)[1])
shutdown = seconds(sup["shutdown_timeout"])
(name, program), = config["programs"].items()
listen_port = int(program["listen"][0].rsplit(":", 1)[1])

command0 = program["command"].split()[0]
if not os.access(command0, os.X_OK):
    print("not checked with preforkd -t: %s is not installed" % command0)
else:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "preforkd.yaml")
        with open(path, "w") as f:
            f.write(text.replace("/srv/web", tmp).replace("/run/preforkd/", tmp + "/"))
        r = subprocess.run([preforkd, "-t", "-c", path], capture_output=True, text=True)
        check(r.returncode == 0, "preforkd -t on the ConfigMap's preforkd.yaml: %s%s" % (r.stdout, r.stderr))

pod = deployment["spec"]["template"]["spec"]
(container,) = pod["containers"]
check(container["command"][:1] == ["/usr/sbin/preforkd"], "the container runs preforkd as PID 1")
conf_path = container["command"][container["command"].index("-c") + 1]
mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
volume = next(v for v in pod["volumes"] if v["name"] == "config")
check(volume["configMap"]["name"] == configmap["metadata"]["name"], "the config volume is the ConfigMap")
check(conf_path == os.path.join(mount["mountPath"], "preforkd.yaml"), "-c names the mounted preforkd.yaml")
check(container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": metrics_port},
      "liveness is GET /healthz on the metrics port %d" % metrics_port)
check(container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": metrics_port},
      "readiness is GET /readyz on the metrics port %d" % metrics_port)
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
check(ports.get("http") == listen_port, "containerPort http is the listen port %d" % listen_port)
check(ports.get("metrics") == metrics_port, "containerPort metrics is %d" % metrics_port)
pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
sleep = int(pre_stop[-1]) if pre_stop[0].endswith("sleep") else 0
check(sleep > 0, "preStop sleeps so that the endpoint deregisters before TERM")
grace = pod["terminationGracePeriodSeconds"]
check(grace > sleep + shutdown, "terminationGracePeriodSeconds %s > preStop %s + shutdown_timeout %s"
      % (grace, sleep, shutdown))
cpu_limit = container["resources"]["limits"]["cpu"]
check(program["workers"] == int(cpu_limit),
      "workers (%r) is the container's CPU limit (%s): `auto` would be the node's CPU count"
      % (program["workers"], cpu_limit))
if service is not None:
    check(service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"], "the Service selects the pods")

dropin = configparser.ConfigParser(strict=False, interpolation=None)
dropin.optionxform = str
with open(os.path.join(src, "conf/examples/systemd/preforkd.service.d/fleet.conf")) as f:
    raw = f.read()
dropin.read_string(raw)
check(re.search(r"^ExecStart=\n^ExecStart=/usr/sbin/preforkd ", raw, re.M) is not None,
      "the drop-in resets ExecStart= before setting it")
check(seconds(dropin["Service"]["TimeoutStopSec"]) > 30, "TimeoutStopSec above the shipped shutdown_timeout (30s)")

for f in failures:
    print("FAIL:", f)
print("ok" if not failures else "%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)

// Validates rendered Kubernetes manifests (`kubectl kustomize` output)
// offline, for k8s/manifests_test.sh:
//
//   node validate.mjs [--flags BINARY=HELPFILE]... [--external KIND/NAME]...
//       MANIFEST.yaml...
//
// For every object:
//   1. Schema: the published Kubernetes OpenAPI schema of its apiVersion and
//      kind, through the npm package kubernetes-models (CRDs:
//      @kubernetes-models/prometheus-operator): types, required fields,
//      enums, formats. An apiVersion/kind it has no schema for is an error.
//   2. Unknown fields: kubernetes-models' validators accept fields the
//      schema does not declare (a typo such as `replica:` passes), so the
//      object is validated a second time through a Proxy that records every
//      property the validator reads. The compiled validators read each
//      declared property of every object they visit (and iterate the keys of
//      maps), so a key present in the object that the validator never read
//      is not in the schema: an unknown field.
//   3. podtrain's rules for these manifests (see POLICY below): real flags
//      of the binaries, $(VAR) references defined, the worker's grace period
//      longer than its emergency-checkpoint wait, GPU requests equal to
//      limits, integer PodDisruptionBudgets below the replica count, probes
//      and scrape annotations on the ports the flags open, references to
//      objects that exist.
//
// Prints one line per problem ("<file>: <Kind>/<name>: <path>: <what>") and
// a summary; exits 1 if there is any problem, 2 on a usage error.

import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

// ---------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------

// apiVersion -> module holding its kinds.
function moduleFor(apiVersion) {
  if (apiVersion === "monitoring.coreos.com/v1") {
    return "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
  }
  if (!/^[a-z0-9.-]*\/?v[0-9a-z]+$/.test(apiVersion)) return null;
  return `kubernetes-models/${apiVersion}`;
}

async function modelClass(apiVersion, kind) {
  const module = moduleFor(String(apiVersion));
  if (module === null) return null;
  let exports;
  try {
    exports = await import(module);
  } catch {
    return null;
  }
  const model = exports[kind];
  return typeof model === "function" && model.kind === kind ? model : null;
}

// Fields the schema declares but kubernetes-models' compiled validators
// never look at: its generator strips every schema key named "description"
// (documentation), which also drops the real `description` property of
// these kinds (the models' TypeScript interfaces keep it). They are checked
// here by hand: path -> expected typeof.
const UNSEEN_FIELDS = {
  "scheduling.k8s.io/v1/PriorityClass": { "/description": "string" },
};

// Runs the model's validator over `object` through Proxies; returns the
// schema errors and the paths of the keys the validator never read.
function validateStrictly(model, object) {
  // One Proxy per object, whose reads accumulate however often the
  // validator reaches it (it reads a property once to test for it and again
  // to descend into it).
  const visited = new Map();  // object -> {path, proxy, reads}
  const wrap = (value, path) => {
    if (value === null || typeof value !== "object") return value;
    if (visited.has(value)) return visited.get(value).proxy;
    const reads = new Set();
    const proxy = new Proxy(value, {
      get(target, key, receiver) {
        const result = Reflect.get(target, key, receiver);
        if (typeof key !== "string" || !Object.hasOwn(target, key)) {
          return result;
        }
        reads.add(key);
        return wrap(result, `${path}/${key}`);
      },
    });
    visited.set(value, { path, proxy, reads });
    return proxy;
  };
  const errors = [];
  try {
    model.prototype.validate.call(wrap(object, ""));
  } catch (error) {
    if (!Array.isArray(error.errors)) throw error;
    for (const e of error.errors) {
      const allowed = e.params?.allowedValues;
      errors.push({
        path: e.instancePath || "/",
        message: (e.message ?? e.keyword) +
                     (allowed ? ` (${allowed.join(", ")})` : ""),
      });
    }
  }
  const unknown = [];
  for (const [value, { path, reads }] of visited) {
    for (const key of Object.keys(value)) {
      if (!reads.has(key)) unknown.push(`${path}/${key}`);
    }
  }
  return { errors, unknown };
}

// ---------------------------------------------------------------------------
// POLICY: podtrain's rules across the rendered objects
// ---------------------------------------------------------------------------

const WORKLOAD_KINDS =
    new Set(["StatefulSet", "Deployment", "DaemonSet", "Job", "ReplicaSet"]);

function podSpecOf(object) {
  if (!WORKLOAD_KINDS.has(object.kind)) return null;
  return object.spec?.template?.spec ?? null;
}

// The podtrain binary a container runs: its command, else its image's
// entrypoint (the images name the binary: deploy/docker/).
function binaryOf(container) {
  const command = container.command?.[0];
  if (command) return command.split("/").pop();
  const image = String(container.image ?? "");
  const name = image.split("/").pop().split(":")[0];
  if (/coordinator/.test(name)) return "podtrain-coordinator";
  if (/worker/.test(name)) return "podtrain-worker";
  return null;
}

function parseFlags(args) {
  const flags = new Map();
  for (const arg of args ?? []) {
    const match = /^--([A-Za-z0-9_]+)(?:=(.*))?$/.exec(String(arg));
    if (match) flags.set(match[1], match[2] ?? "true");
  }
  return flags;
}

// "$(NAME)" references resolved against the container's literal env values.
function expand(value, env) {
  return String(value).replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g,
                               (whole, name) => env.get(name) ?? whole);
}

function portOf(address) {
  const match = /:(\d+)$/.exec(String(address ?? ""));
  return match ? Number(match[1]) : null;
}

function labelsMatch(selector, labels) {
  return Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);
}

function checkPolicy(objects, knownFlags, external, report) {
  const byKind = (kind) => objects.filter((o) => o.object.kind === kind);
  const names = (kind) => new Set(byKind(kind).map((o) => o.object.metadata?.name));
  const exists = (kind, name) =>
      names(kind).has(name) || external.has(`${kind}/${name}`);
  const services = byKind("Service");

  for (const item of objects) {
    const object = item.object;
    const spec = podSpecOf(object);
    if (spec === null) continue;
    const where = (path) => report(item, path);

    if (spec.priorityClassName && !exists("PriorityClass", spec.priorityClassName)) {
      where("/spec/template/spec/priorityClassName")(
          `PriorityClass ${spec.priorityClassName} is not defined`);
    }
    if (spec.serviceAccountName && !exists("ServiceAccount", spec.serviceAccountName)) {
      where("/spec/template/spec/serviceAccountName")(
          `ServiceAccount ${spec.serviceAccountName} is not defined`);
    }
    for (const [i, volume] of (spec.volumes ?? []).entries()) {
      const path = `/spec/template/spec/volumes/${i}`;
      if (volume.secret && !exists("Secret", volume.secret.secretName)) {
        where(path)(`Secret ${volume.secret.secretName} is not defined`);
      }
      if (volume.configMap && !exists("ConfigMap", volume.configMap.name)) {
        where(path)(`ConfigMap ${volume.configMap.name} is not defined`);
      }
      if (volume.persistentVolumeClaim &&
          !exists("PersistentVolumeClaim", volume.persistentVolumeClaim.claimName)) {
        where(path)(`PersistentVolumeClaim ${
            volume.persistentVolumeClaim.claimName} is not defined`);
      }
    }
    if (object.kind === "StatefulSet") {
      const service = services.find((s) => s.object.metadata?.name === object.spec.serviceName);
      if (!service) {
        where("/spec/serviceName")(`Service ${object.spec.serviceName} is not defined`);
      } else if (service.object.spec?.clusterIP !== "None") {
        where("/spec/serviceName")(`Service ${object.spec.serviceName} is not headless`);
      }
    }
    const templateLabels = object.spec?.template?.metadata?.labels;
    if (object.spec?.selector?.matchLabels &&
        !labelsMatch(object.spec.selector.matchLabels, templateLabels)) {
      where("/spec/selector")("does not select its own pod template");
    }

    for (const [c, container] of (spec.containers ?? []).entries()) {
      const base = `/spec/template/spec/containers/${c}`;
      const env = new Map((container.env ?? [])
                              .filter((e) => e.value !== undefined || e.valueFrom)
                              .map((e) => [e.name, e.value ?? `<${e.name}>`]));
      for (const [a, arg] of [...(container.command ?? []), ...(container.args ?? [])].entries()) {
        for (const [, name] of String(arg).matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) {
          if (!env.has(name)) where(`${base}/args/${a}`)(`$(${name}) is not in the container's env`);
        }
      }
      const binary = binaryOf(container);
      const flags = parseFlags(container.args);
      if (binary && knownFlags.has(binary)) {
        for (const name of flags.keys()) {
          if (!knownFlags.get(binary).has(name)) {
            where(`${base}/args`)(`--${name} is not a flag of ${binary}`);
          }
        }
      }
      // GPUs: whole devices in limits; requests, if any, equal.
      for (const [resource, request] of Object.entries(container.resources?.requests ?? {})) {
        if (resource.endsWith("/gpu") &&
            String(container.resources?.limits?.[resource]) !== String(request)) {
          where(`${base}/resources`)(`${resource} requested but not limited to the same count`);
        }
      }
      const ports = new Map((container.ports ?? []).map((p) => [p.name, p.containerPort]));
      const portNumber = (port) => (typeof port === "string" ? ports.get(port) : port);
      if (binary === "podtrain-coordinator") {
        const health = portOf(flags.get("health_address"));
        if (health === null) where(`${base}/args`)("no --health_address: probes need the plaintext health port");
        for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
          const port = container[probe]?.grpc?.port;
          if (port === undefined) {
            where(`${base}/${probe}`)("needs a grpc probe");
          } else if (port !== health) {
            where(`${base}/${probe}`)(`grpc probe on ${port}, health port is ${health}`);
          }
        }
        if (!flags.has("auth_token_file")) where(`${base}/args`)("no --auth_token_file");
        if (!String(flags.get("journal") ?? "").startsWith("/var/lib/podtrain/journal/")) {
          where(`${base}/args`)("--journal is not on the journal volume");
        }
      }
      if (binary === "podtrain-worker") {
        if (!flags.has("token_file")) where(`${base}/args`)("no --token_file");
        const grace = Number(expand(flags.get("preemption_grace_seconds") ?? "25", env));
        const period = spec.terminationGracePeriodSeconds ?? 30;
        if (!(grace > 0) || period < grace + 10) {
          where("/spec/template/spec/terminationGracePeriodSeconds")(
              `${period} s does not leave room for a ${grace} s emergency checkpoint wait ` +
              "(needs at least 10 s more)");
        }
        if (!spec.affinity?.podAntiAffinity) where("/spec/template/spec/affinity")("workers need pod anti-affinity");
      }
      const metricsPort = portOf(flags.get("metrics_address"));
      const annotations = object.spec?.template?.metadata?.annotations ?? {};
      if (metricsPort !== null && (binary === "podtrain-coordinator" || binary === "podtrain-worker")) {
        if (annotations["prometheus.io/scrape"] !== "true" ||
            Number(annotations["prometheus.io/port"]) !== metricsPort) {
          where("/spec/template/metadata/annotations")(
              `scrape annotations must name the metrics port ${metricsPort}`);
        }
        if (portNumber("metrics") !== metricsPort) {
          where(`${base}/ports`)(`no container port "metrics" = ${metricsPort}`);
        }
      }
    }
  }

  for (const item of services) {
    const service = item.object;
    const selected = objects.filter((o) => podSpecOf(o.object) &&
        labelsMatch(service.spec?.selector, o.object.spec?.template?.metadata?.labels));
    if (service.spec?.selector && selected.length === 0) {
      report(item, "/spec/selector")("selects no pod template");
    }
  }

  for (const item of byKind("PodDisruptionBudget")) {
    const pdb = item.object;
    const where = report(item, "/spec");
    if (pdb.spec?.maxUnavailable !== undefined || !Number.isInteger(pdb.spec?.minAvailable)) {
      where("use an integer minAvailable");
      continue;
    }
    const targets = objects.filter((o) => podSpecOf(o.object) &&
        labelsMatch(pdb.spec?.selector?.matchLabels, o.object.spec?.template?.metadata?.labels));
    if (targets.length === 0) where("selects no pod template");
    for (const target of targets) {
      const replicas = target.object.spec?.replicas ?? 1;
      if (pdb.spec.minAvailable >= replicas) {
        where(`minAvailable ${pdb.spec.minAvailable} >= ${replicas} replicas of ` +
              `${target.object.kind}/${target.object.metadata?.name}: no drain could ever proceed`);
      }
    }
  }

  for (const item of byKind("ServiceMonitor")) {
    const monitor = item.object;
    const selected = services.filter((s) => labelsMatch(monitor.spec?.selector?.matchLabels, s.object.metadata?.labels));
    if (selected.length === 0) report(item, "/spec/selector")("selects no Service");
    for (const endpoint of monitor.spec?.endpoints ?? []) {
      for (const s of selected) {
        if (!(s.object.spec?.ports ?? []).some((p) => p.name === endpoint.port)) {
          report(item, "/spec/endpoints")(`Service ${s.object.metadata?.name} has no port ${endpoint.port}`);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

function parseHelp(file) {
  // Abseil's --helpfull: "    --name (help...); default: ...;"
  const flags = new Set();
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const match = /^\s+--([A-Za-z0-9_]+) \(/.exec(line);
    if (match) flags.add(match[1]);
  }
  return flags;
}

async function main(argv) {
  const knownFlags = new Map();
  const external = new Set();
  const files = [];
  for (let i = 0; i < argv.length; ++i) {
    if (argv[i] === "--flags" && argv[i + 1]?.includes("=")) {
      const [binary, file] = argv[++i].split("=");
      const flags = parseHelp(file);
      if (flags.size === 0) {
        console.error(`validate: no flags found in ${file}`);
        return 2;
      }
      knownFlags.set(binary, flags);
    } else if (argv[i] === "--external" && argv[i + 1]) {
      external.add(argv[++i]);
    } else if (argv[i].startsWith("--")) {
      console.error(`validate: unknown option ${argv[i]}`);
      return 2;
    } else {
      files.push(argv[i]);
    }
  }
  if (files.length === 0) {
    console.error("usage: node validate.mjs [--flags BINARY=HELPFILE]... " +
                  "[--external KIND/NAME]... MANIFEST.yaml...");
    return 2;
  }

  let problems = 0;
  const objects = [];
  const report = (item, path) => (message) => {
    ++problems;
    const name = item.object?.metadata?.name ?? "?";
    console.log(`${item.file}: ${item.object?.kind ?? "?"}/${name}: ${path}: ${message}`);
  };
  for (const file of files) {
    const documents = parseAllDocuments(readFileSync(file, "utf8"));
    for (const document of documents) {
      const item = { file, object: null };
      if (document.errors.length > 0) {
        report(item, "/")(`YAML: ${document.errors[0].message}`);
        continue;
      }
      const object = document.toJS();
      if (object === null) continue;
      item.object = object;
      if (typeof object !== "object" || Array.isArray(object)) {
        report(item, "/")("not an object");
        continue;
      }
      const model = await modelClass(object.apiVersion, object.kind);
      if (model === null) {
        report(item, "/")(`no schema for apiVersion ${object.apiVersion} kind ${object.kind}`);
        continue;
      }
      const { errors, unknown } = validateStrictly(model, object);
      for (const error of errors) {
        report(item, error.path)(`schema: ${error.message}`);
      }
      const unseen = UNSEEN_FIELDS[`${object.apiVersion}/${object.kind}`] ?? {};
      for (const path of unknown) {
        if (!(path in unseen)) {
          report(item, path)("unknown field");
        } else if (typeof object[path.slice(1)] !== unseen[path]) {
          report(item, path)(`schema: must be ${unseen[path]}`);
        }
      }
      objects.push(item);
    }
  }
  checkPolicy(objects, knownFlags, external, report);
  console.log(`validate: ${objects.length} objects, ${problems} problems`);
  return problems === 0 && objects.length > 0 ? 0 : 1;
}

process.exitCode = await main(process.argv.slice(2));

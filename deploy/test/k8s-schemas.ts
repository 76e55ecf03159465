/**
 * Validates one Kubernetes object against the OpenAPI schema of its
 * apiVersion/kind, offline: the validators of the `kubernetes-models` package
 * (generated from the Kubernetes OpenAPI spec) and
 * `@kubernetes-models/prometheus-operator` (ServiceMonitor, PodMonitor,
 * PrometheusRule). They check types, required fields and formats; they allow
 * fields the schema does not name (as kubeconform does without -strict).
 */
// biome-ignore lint/suspicious/noExplicitAny: manifests are parsed YAML of any shape, checked field by field
type Obj = Record<string, any>;

const CORE_GROUPS: Record<string, string> = { v1: 'v1' };

export async function validateManifest(o: Obj): Promise<void> {
  const { apiVersion, kind } = o as { apiVersion: string; kind: string };
  const where = `${kind}/${o.metadata?.name}`;
  let mod: Record<string, new (data: Obj) => { validate(): void }>;
  try {
    if (apiVersion.startsWith('monitoring.coreos.com/')) {
      mod = await import(`@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`);
    } else {
      mod = await import(`kubernetes-models/${CORE_GROUPS[apiVersion] ?? apiVersion}/${kind}`);
    }
  } catch (err) {
    throw new Error(`${where}: no schema for ${apiVersion} ${kind} (${(err as Error).message})`);
  }
  const Model = mod[kind];
  if (!Model) throw new Error(`${where}: no model ${kind} in ${apiVersion}`);
  // Long Secret values come out of kustomize as block scalars with line breaks,
  // which the API server's base64 decoder skips and the schema's "byte" format does not.
  const data =
    kind === 'Secret' && o.data
      ? { ...o, data: Object.fromEntries(Object.entries(o.data).map(([k, v]) => [k, String(v).replace(/\r?\n/g, '')])) }
      : o;
  try {
    new Model(data).validate();
  } catch (err) {
    throw new Error(`${where} (${apiVersion}): ${(err as Error).message}`);
  }
}

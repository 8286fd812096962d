/**
 * deploy/: the alert rules through promtool (syntax and their unit tests), the manifests parsed
 * and checked for what the exporter needs to see every namespace of a node, the scrape
 * configuration, and the example web configuration through the exporter's own loader.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { parseAllDocuments, parse } from 'yaml';
import { loadWebConfig } from '../../../lib/metrics/web-config.js';
import { describeIntegration } from '../../helpers/gate.js';
import { run } from '../../helpers/netns.js';
import { requireTool } from '../../helpers/tools.js';

const DEPLOY = fileURLToPath(new URL('../../../deploy/', import.meta.url));

/** A parsed manifest: its shape is what the test checks. */
type Doc = Record<string, any>;

function documents(file: string): Doc[] {
  return parseAllDocuments(readFileSync(join(DEPLOY, file), 'utf8')).map((d) => {
    expect(d.errors, file).toEqual([]);
    return d.toJS() as Doc;
  });
}

describeIntegration('deploy/', () => {
  it('promtool check rules: alerts.yml', async () => {
    const { stdout } = await run(requireTool('promtool'), ['check', 'rules', join(DEPLOY, 'alerts.yml')]);
    expect(stdout).toMatch(/SUCCESS: 6 rules found/);
  });

  it('promtool test rules: every alert fires when it should and not before', async () => {
    const { stdout } = await run(requireTool('promtool'), ['test', 'rules', join(DEPLOY, 'alerts.test.yml')]);
    expect(stdout).toMatch(/SUCCESS/);
    const tested = new Set([...readFileSync(join(DEPLOY, 'alerts.test.yml'), 'utf8').matchAll(/alertname: (\w+)/g)].map((m) => m[1]));
    const defined = [...readFileSync(join(DEPLOY, 'alerts.yml'), 'utf8').matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
    expect([...tested].sort()).toEqual([...defined].sort());
  });

  it('the DaemonSet: host PID, the three capabilities and no others, the netns mounts, all namespaces over TLS', () => {
    const docs = documents('daemonset.yaml');
    const ds = docs.find((d) => d.kind === 'DaemonSet') as Doc;
    expect(ds).toBeDefined();
    const pod = ds.spec.template.spec;
    expect(pod.hostPID).toBe(true);
    expect(pod.hostNetwork).toBe(false);
    expect(ds.spec.selector.matchLabels).toEqual(ds.spec.template.metadata.labels);
    const [container] = pod.containers;
    const security = container.securityContext;
    expect(security.privileged).toBe(false);
    expect(security.allowPrivilegeEscalation).toBe(false);
    expect(security.readOnlyRootFilesystem).toBe(true);
    expect(security.capabilities.drop).toEqual(['ALL']);
    expect([...security.capabilities.add].sort()).toEqual(['NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE']);
    expect(container.args).toEqual(expect.arrayContaining(['exporter', '--all-namespaces', '--web.config.file']));
    expect(container.args[container.args.indexOf('--listen') + 1]).toBe('0.0.0.0:9659');
    expect(container.ports).toContainEqual(expect.objectContaining({ name: 'metrics', containerPort: 9659 }));
    for (const path of ['/run/netns', '/run/docker/netns']) {
      const mount = container.volumeMounts.find((m: Doc) => m.mountPath === path);
      expect(mount, path).toMatchObject({ readOnly: true, mountPropagation: 'HostToContainer' });
      expect(pod.volumes.find((v: Doc) => v.name === mount.name).hostPath.path).toBe(path);
    }
    // Each privilege is justified in the file.
    const text = readFileSync(join(DEPLOY, 'daemonset.yaml'), 'utf8');
    for (const word of ['NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE', 'hostPID']) expect(text).toMatch(new RegExp(`#\\s+${word}\\s+\\S`));
  });

  it('the sidecar shares the broker\'s pod and needs NET_ADMIN only', () => {
    const [deployment] = documents('sidecar-emqx.yaml');
    const containers = deployment?.spec.template.spec.containers as Doc[];
    expect(containers.map((c) => c.name)).toEqual(['emqx', 'conntrack-exporter']);
    const sidecar = containers[1] as Doc;
    expect(sidecar.args).not.toContain('--all-namespaces');
    expect(sidecar.args).not.toContain('--netns');
    expect(sidecar.securityContext.capabilities).toEqual({ drop: ['ALL'], add: ['NET_ADMIN'] });
    expect(deployment?.spec.template.spec.hostPID).toBeUndefined();
  });

  it('the scrape configuration: https with basic auth, the rules file, keeping the exporter ports', () => {
    const config = parse(readFileSync(join(DEPLOY, 'prometheus.yml'), 'utf8')) as Doc;
    expect(config.rule_files).toEqual(['alerts.yml']);
    const [job] = config.scrape_configs;
    expect(job).toMatchObject({ job_name: 'conntrack', scheme: 'https', basic_auth: { username: 'prometheus' } });
    expect(job.tls_config.ca_file).toMatch(/\.crt$/);
    expect(job.relabel_configs[0]).toMatchObject({ action: 'keep' });
    // The alert rules' job name is this one.
    expect(readFileSync(join(DEPLOY, 'alerts.yml'), 'utf8')).toContain('up{job="conntrack"}');
  });

  it('the example web config loads with the exporter\'s own loader: TLS and one bcrypt user', async () => {
    const config = await loadWebConfig(join(DEPLOY, 'web-config.yml'));
    expect(config.tls).toMatchObject({ certFile: join(DEPLOY, 'tls.crt'), keyFile: join(DEPLOY, 'tls.key'), minVersion: 'TLSv1.2' });
    expect([...config.basicAuthUsers.keys()]).toEqual(['prometheus']);
  });
}, { tools: ['promtool'] });

/**
 * `npm run demo`: the incident, to watch. An MQTT broker in a sandbox network namespace, the global
 * nf_conntrack_max lowered to a few hundred, more clients than that; then what `conntrack doctor`
 * says, and the fix it recommends, applied. The same scenario as test/integration/incident.test.ts.
 *
 * Needs root, mosquitto and nftables; restores nf_conntrack_max on exit, Ctrl-C included.
 */
import { parseArgs } from 'node:util';

import { formatDiagnosis } from '../lib/cli/doctor.js';
import { Conntrack } from '../lib/table/conntrack.js';
import { diagnose } from '../lib/doctor/diagnose.js';
import { withGlobalLimits } from '../test/helpers/global-lock.js';
import { MqttIncident } from '../test/helpers/incident.js';

const { values } = parseArgs({
  options: {
    limit: { type: 'string', default: '200' },
    clients: { type: 'string', default: '300' },
  },
});
const limit = Number(values.limit);
const clients = Number(values.clients);
if (!Number.isInteger(limit) || limit < 16 || !Number.isInteger(clients) || clients <= limit || clients > 5000) {
  console.error('usage: npm run demo -- [--limit N (>= 16)] [--clients M (N < M <= 5000)]');
  process.exit(2);
}

function step(text: string): void {
  console.log(`\n\x1b[1m== ${text}\x1b[0m`);
}

await withGlobalLimits('exclusive', async (lock) => {
  step('Start an MQTT broker (mosquitto) in a sandbox network namespace that tracks its connections');
  const incident = await MqttIncident.start(lock, (line) => console.log(`   ${line}`));
  // Ctrl-C: remove the namespace before leaving; the lock restores the limit at exit.
  const interrupted = (): void => {
    void incident.close().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const ct = await Conntrack.open({ netns: incident.ns.path });
    try {
      step(`Lower the global nf_conntrack_max to ${limit}, then connect ${clients} MQTT clients`);
      // Higher when another namespace holds many entries: theirs must keep room.
      const lowered = await incident.lowerLimit(limit);
      await incident.connect(clients + (lowered - limit));
      const count = await ct.count();
      const stats = await ct.stats();
      console.log(`   conntrack count: ${count.entries} of ${count.max}; drop=${stats.total.drop ?? 0} early_drop=${stats.total.early_drop ?? 0}`);

      step(`conntrack doctor --netns ${incident.ns.path}`);
      const diagnosis = await diagnose({ netns: incident.ns.path });
      console.log(formatDiagnosis(diagnosis));

      const max = diagnosis.recommendation?.max;
      if (max === undefined) throw new Error('the doctor gave no sizing recommendation for a full table');
      step(`Apply the recommendation (nf_conntrack_max=${max}) and connect the clients that failed`);
      incident.raiseLimit(max);
      const rest = await incident.connect(clients + (lowered - limit) - count.entries);
      const published = await incident.publish();
      console.log(`   ${published.published} of ${rest.open} clients published and got their PUBACK`);
      const after = await ct.count();
      console.log(`   conntrack count: ${after.entries} of ${after.max}`);
    } finally {
      await ct.close();
    }
  } finally {
    step('Clean up');
    await incident.close();
  }
});

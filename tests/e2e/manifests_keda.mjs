// Validates KEDA resources against KEDA's own CRD schemas, as compiled by the maintained
// @kubernetes-models/keda package (generated from KEDA's CRDs). Prints one line per resource;
// exits 1 when any is invalid or of a kind it does not know.
// argv: the YAML files.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";

const kinds = { ScaledObject, TriggerAuthentication };
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const resource = doc.toJS();
    if (!resource || !String(resource.apiVersion).startsWith("keda.sh/")) continue;
    const Kind = kinds[resource.kind];
    if (!Kind) {
      console.log(`unknown ${resource.kind} in ${file}`);
      process.exitCode = 1;
      continue;
    }
    try {
      new Kind(resource).validate();
      console.log(`valid ${resource.kind}/${resource.metadata.name}`);
    } catch (e) {
      console.log(`invalid ${resource.kind}/${resource.metadata?.name} in ${file}: ${e.message}`);
      process.exitCode = 1;
    }
  }
}

// Allure 3 configuration for bms-ota-hil evidence reports (see reports/README.md).
// Paths given on the command line (-o, results dirs) are resolved against the current
// directory, so run `npx allure generate` from the repository root.
import { defineConfig } from "allure";

export default defineConfig({
  name: "BMS OTA update validation",
  // The session-level evidence hil.report writes next to the results: shown as global
  // attachments of the report, so the HTML alone carries the whole audit trail.
  // Glob patterns, resolved against the current directory (the repository root).
  globalAttachments: [
    "reports/fault-matrix.md",
    "reports/fault-matrix.json",
    "reports/traceability.md",
    "reports/traceability.json",
    "reports/run-record.md",
    "reports/run-record.json",
  ],
  plugins: {
    awesome: {
      options: {
        reportName: "BMS OTA update validation",
        // One self-contained index.html: an auditor can archive or mail it, and it opens
        // offline from the file system (no web server, no second file to lose).
        singleFile: true,
        reportLanguage: "en",
        // Tests sit under their module (update, power faults, image faults, ...); the
        // fault-matrix row is the "feature" label and the regulation topics are tags.
        groupBy: ["parentSuite", "suite", "subSuite"],
      },
    },
  },
});

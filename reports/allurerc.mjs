// Allure 3 configuration for bms-ota-hil evidence reports (see reports/README.md).
// Paths given on the command line (-o, results dirs) are resolved against the current
// directory, so run it from the repository root - `make report` (`hil report html`) does, and
// also strips the analytics script Allure's template carries (it has no option for that).
import { existsSync, readFileSync } from "node:fs";
import { defineConfig } from "allure";

// Categories (DUT failure / bench error / timeout) are derived from the exception types in
// hil/errors.py by hil.report.allure.categories(); the plugin and `hil report html` write them here.
const categoriesFile = process.env.HIL_ALLURE_CATEGORIES ?? "reports/categories.json";
const categories = existsSync(categoriesFile) ? JSON.parse(readFileSync(categoriesFile, "utf8")) : undefined;

export default defineConfig({
  name: "BMS OTA update validation",
  // Nightly trend: every generate appends one line to this file and shows the earlier runs.
  // CI carries it from run to run (restore before `make suite`, save after; reports/README.md).
  historyPath: process.env.HIL_ALLURE_HISTORY ?? "reports/history.jsonl",
  historyLimit: 100,
  categories,
  // The session-level evidence hil.report.records writes next to the results: shown as global
  // attachments of the report, so the HTML alone carries the whole audit trail. Traceability goes
  // in once (.md, every evidence file with its SHA-256); its .json/.csv/.html copies stay beside
  // the report in reports/ (the single file stays under 20 MB: hil report check).
  // Glob patterns, resolved against the current directory (the repository root).
  globalAttachments: [
    "reports/fault-matrix.md",
    "reports/fault-matrix.json",
    "reports/traceability.md",
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
        // The requirement tree: requirement (feature = "<regulation> <paragraph> - <id>: <topic>",
        // sorted by regulation) -> case (story) -> test. Epics (the regulation) are set too, but
        // not grouped on: Allure nests every epic with every feature of a test, and most cases
        // are evidence for an R156 paragraph and an ISO 24089 topic at once.
        groupBy: ["feature", "story"],
        // Tree and test side by side: the requirement stays in view while a test's steps,
        // measurements and attachments are read.
        layout: "split",
      },
    },
  },
});

import { defineConfig } from "vitest/config";

/** The integration cases that must hold on a Redis Cluster as well as on one Redis. */
const CLUSTER_CORE = [
  "test/integration/serving.test.ts",
  "test/integration/precompute.test.ts",
  "test/integration/versions.test.ts",
  "test/integration/admin-api.test.ts",
  "test/integration/access.test.ts",
  "test/integration/models-api.test.ts",
  "test/integration/experiments.test.ts",
  "test/integration/audit.test.ts",
  "test/integration/cluster.test.ts",
];

export default defineConfig({
  test: {
    globalSetup: ["test/helpers/global-setup.ts"],
    // Integration files start servers and child processes: generous but bounded.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    reporters: ["default"],
    projects: [
      {
        extends: true,
        test: {
          name: "redis",
          include: ["test/**/*.test.ts"],
          exclude: ["test/integration/cluster.test.ts", "**/node_modules/**"],
        },
      },
      // The same files again against a 3-master Redis Cluster (global-setup starts it).
      { extends: true, test: { name: "cluster", include: CLUSTER_CORE } },
    ],
  },
});

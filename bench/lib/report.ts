/** Printing benchmark results side by side: ratios and aligned tables. */

export function ratio(a: number, b: number): string {
  return `${(a / b).toFixed(2)}×`;
}

/** Left-aligns the first column, right-aligns the rest. */
export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
      .join("  ");
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)]
    .map((l) => `  ${l}`)
    .join("\n");
}

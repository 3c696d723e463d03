/** Held-out quality measures reported in the model card. */

export function auc(scores: Float32Array, labels: Uint8Array): number {
  const order = Array.from(scores.keys()).sort(
    (a, b) => (scores[a] as number) - (scores[b] as number),
  );
  let positives = 0;
  let rankSum = 0;
  // Average ranks over ties so the AUC does not depend on the sort's tie order.
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j + 1 < order.length && scores[order[j + 1] as number] === scores[order[i] as number])
      j++;
    const rank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) {
      if (labels[order[k] as number]) {
        positives++;
        rankSum += rank;
      }
    }
    i = j + 1;
  }
  const negatives = order.length - positives;
  return (rankSum - (positives * (positives + 1)) / 2) / (positives * negatives);
}

export function logLoss(probabilities: Float32Array, labels: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < labels.length; i++) {
    const p = Math.min(Math.max(probabilities[i] as number, 1e-7), 1 - 1e-7);
    sum -= labels[i] ? Math.log(p) : Math.log(1 - p);
  }
  return sum / labels.length;
}

export function meanAbsoluteError(predicted: Float32Array | number, actual: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < actual.length; i++) {
    const p = typeof predicted === "number" ? predicted : (predicted[i] as number);
    sum += Math.abs(p - (actual[i] as number));
  }
  return sum / actual.length;
}

export function round(value: number, digits = 4): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

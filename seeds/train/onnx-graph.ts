/**
 * A small builder for ONNX graphs over onnx-proto, enough for the demo MLP and its
 * hand-derived training graph. Weights are written as raw little-endian tensors.
 */
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;
const DT = onnx.TensorProto.DataType;
const AT = onnx.AttributeProto.AttributeType;

export type ElemType = "float" | "int64" | "bool";
export type Dim = number | string;
export type Attr = number | number[] | string;

const elemCode: Record<ElemType, number> = { float: DT.FLOAT, int64: DT.INT64, bool: DT.BOOL };

function valueInfo(name: string, type: ElemType, dims: Dim[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: elemCode[type],
        shape: {
          dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })),
        },
      },
    },
  };
}

function attribute(name: string, value: Attr): onnxProto.onnx.IAttributeProto {
  if (typeof value === "string")
    return { name, type: AT.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: AT.INTS, ints: value };
  if (Number.isInteger(value)) return { name, type: AT.INT, i: value };
  return { name, type: AT.FLOAT, f: value };
}

export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private counter = 0;

  input(name: string, type: ElemType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  output(name: string, type: ElemType, dims: Dim[]): void {
    this.outputs.push(valueInfo(name, type, dims));
  }

  floats(name: string, dims: number[], data: Float32Array): string {
    const raw = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
    this.initializers.push({ name, dims, dataType: DT.FLOAT, rawData: raw });
    return name;
  }

  int64s(name: string, dims: number[], data: number[]): string {
    const raw = new Uint8Array(BigInt64Array.from(data.map(BigInt)).buffer);
    this.initializers.push({ name, dims, dataType: DT.INT64, rawData: raw });
    return name;
  }

  /** Adds a node; returns its output names (fresh ones unless given). */
  op(
    type: string,
    inputs: string[],
    attrs: Record<string, Attr> = {},
    outputs?: string[],
  ): string[] {
    const outs = outputs ?? [`${type.toLowerCase()}_${this.counter++}`];
    this.nodes.push({
      opType: type,
      name: `${type}_${this.counter++}`,
      input: inputs,
      output: outs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outs;
  }

  /** Single-output shorthand. */
  op1(type: string, inputs: string[], attrs: Record<string, Attr> = {}, output?: string): string {
    const [out] = this.op(type, inputs, attrs, output === undefined ? undefined : [output]);
    if (out === undefined) throw new Error("node without output");
    return out;
  }

  serialize(graphName: string, docString: string): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: "predcache-seeds",
      docString,
      opsetImport: [{ domain: "", version: 17 }],
      graph: {
        name: graphName,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

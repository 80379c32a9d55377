/**
 * lib/onnx — building ONNX models from TypeScript (onnx-buf's generated ONNX schema under @bufbuild/protobuf v2).
 * Used to make the default oracle model and to export policies for onnxruntime.
 */
export { type AttrValue, type Attrs, attribute, type FloatAttr, float, floats } from "./attribute.js";
export {
  type BuildOptions,
  type Dim,
  GraphBuilder,
  type GraphBuilderOptions,
  modelMetadata,
  type NodeOptions,
  parseModel,
  serializeModel,
  tensorValueInfo,
} from "./graph.js";
export {
  boolTensor,
  DataType,
  dataTypeOf,
  elementCount,
  floatTensor,
  int64Tensor,
  type TensorData,
  tensor,
  tensorValues,
} from "./tensor.js";

/**
 * Server reflection for protobuf-es services. @grpc/reflection reads a proto-loader `PackageDefinition`; its only
 * use of one is each entry's `fileDescriptorProtos`, so we hand it the serialized FileDescriptorProtos that
 * protobuf-es already embeds in the generated code (the service's file and, transitively, its imports).
 */
import { type DescFile, type DescService, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { Server } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { protoPath as healthProtoPath } from "grpc-health-check";

function withImports(file: DescFile, seen = new Map<string, DescFile>()): Map<string, DescFile> {
  if (seen.has(file.proto.name)) return seen;
  seen.set(file.proto.name, file);
  for (const dependency of file.dependencies) withImports(dependency, seen);
  return seen;
}

/** Adds grpc.reflection.v1 (and v1alpha) listing `services` and grpc.health.v1.Health to `server`. */
export function addReflection(server: Server, services: DescService[]): void {
  const packageDefinition: Record<string, { fileDescriptorProtos: Buffer[] }> = {};
  for (const service of services) {
    const files = [...withImports(service.file).values()];
    packageDefinition[service.typeName] = {
      fileDescriptorProtos: files.map((file) => Buffer.from(toBinary(FileDescriptorProtoSchema, file.proto))),
    };
  }
  // Health is served from grpc-health-check's own .proto; proto-loader attaches its file descriptors to each message type.
  const health = loadSync(healthProtoPath)["grpc.health.v1.HealthCheckRequest"] as unknown as { fileDescriptorProtos: Buffer[] };
  packageDefinition["grpc.health.v1.Health"] = { fileDescriptorProtos: health.fileDescriptorProtos };
  const reflection = new ReflectionService(packageDefinition as unknown as ConstructorParameters<typeof ReflectionService>[0], {
    services: [...services.map((service) => service.typeName), "grpc.health.v1.Health"],
  });
  reflection.addToServer(server);
}

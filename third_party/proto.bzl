"""podtrain_proto_library: one line turns a .proto into C++ messages + gRPC stubs.

Bazel 4 has no offline proto toolchain here, so a genrule runs Debian's protoc
with grpc_cpp_plugin. Usage, in proto/BUILD.bazel:

    podtrain_proto_library(name = "job", src = "job.proto", deps = [":common"])

defines `job_cc_proto` (a cc_library exposing proto/job.pb.h and
proto/job.grpc.pb.h). `deps` name other podtrain_proto_library targets whose
.proto files `src` imports.
"""

def podtrain_proto_library(name, src, deps = [], visibility = None):
    base = src[:-len(".proto")]
    outs = [
        base + ".pb.h",
        base + ".pb.cc",
        base + ".grpc.pb.h",
        base + ".grpc.pb.cc",
    ]
    dep_protos = [d + "_proto_files" for d in deps]
    native.filegroup(
        name = name + "_proto_files",
        srcs = [src] + dep_protos,
        visibility = visibility,
    )
    native.genrule(
        name = name + "_codegen",
        srcs = [src] + dep_protos,
        outs = outs,
        cmd = " ".join([
            "/usr/bin/protoc",
            "-I.",
            "-I/usr/include",
            "--cpp_out=$(GENDIR)",
            "--grpc_out=$(GENDIR)",
            "--plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin",
            "$(location %s)" % src,
        ]),
        message = "protoc " + src,
    )
    native.cc_library(
        name = name + "_cc_proto",
        srcs = [base + ".pb.cc", base + ".grpc.pb.cc"],
        hdrs = [base + ".pb.h", base + ".grpc.pb.h"],
        deps = [d + "_cc_proto" for d in deps] + [
            "@system//:grpc",
            "@system//:protobuf",
        ],
        visibility = visibility,
    )

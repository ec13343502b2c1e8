# syntax=docker/dockerfile:1
# The sriov-dra node driver image:  docker build -t sriov-dra:dev .
#
# Build stage: the Rust toolchain compiles the `sriov-dra` binary from the
# locked dependency set (protobuf code is generated with protox, so no
# system protoc is needed). `--no-default-features` leaves out the `demo`
# feature and with it the test doubles it runs on (fake API, fake runtime,
# simulated PF): the image ships the driver only.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sriov-dra --bin sriov-dra --no-default-features \
    && install -D -m 0755 target/release/sriov-dra /out/sriov-dra

# Runtime stage: glibc and libgcc only. The driver needs no shell and no
# tools on the node image: it talks to sysfs, netlink and unix sockets
# itself, the PCI ID database is compiled in, and the API server's CA comes
# from the pod's service account mount.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/sriov-dra /usr/bin/sriov-dra
ENTRYPOINT ["/usr/bin/sriov-dra"]
CMD ["run"]

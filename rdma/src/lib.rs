//! RDMA devices of a node, read from sysfs.

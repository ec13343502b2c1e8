fn main() {} // placeholder: the IPAM engineer replaces this

# OpenBao's server configuration (OpenBao 2 enables audit devices from its configuration
# only). The socket device writes every audit entry to the operator's listener; the file
# device beside it keeps OpenBao serving while the operator is unreachable (a request fails
# only when every audit device fails). `skip_test`: without it OpenBao probes each device
# when it mounts it, and an operator not reachable then (not yet started, restarting) makes
# OpenBao fail to start or unseal. With the chart in namespace `secretsync`, release
# `secretsync`, the listener's Service is secretsync-openbao-audit.
audit "socket" "secretsync" {
  options {
    address     = "secretsync-openbao-audit.secretsync.svc:9443"
    socket_type = "tcp"
    skip_test   = "true"
  }
}

audit "file" "local" {
  options {
    file_path = "/openbao/audit/audit.log"
  }
}

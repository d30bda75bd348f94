// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 so that the control
// plane's three programs all come from the Go module proxy at pinned versions.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

// Package childproc holds what the project's commands need to start a
// child process (an influxd, an etcd member, a measured server) that must
// not outlive them.
package childproc

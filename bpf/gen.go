package bpf

// The generated *_bpfel.go and *_bpfel.o are committed so that go build needs
// no clang; `make generate` reruns this and CI fails if the result differs.
//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel director director.c -- -I/usr/include/x86_64-linux-gnu

package bpf

// The real-server decap program, generated like the director's (see gen.go).
//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel decap decap.c -- -I/usr/include/x86_64-linux-gnu

package benchxdp

// The generated *_bpfel.go and *_bpfel.o are committed so that go build needs
// no clang; `make generate` reruns these and CI fails if the result differs.
//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel replay replay.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel sink sink.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel fwd fwd.c -- -I/usr/include/x86_64-linux-gnu

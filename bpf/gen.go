package bpf

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -type event -type counters -type conn_state -type rec_kind -type conn_role -type direction -type conn_proto -type rec_flag -type ssl_call apisonar apisonar.bpf.c -- -I./headers

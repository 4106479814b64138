"""15.1: the offset libbpf writes into each relocated instruction on another kernel."""


def answer(relocations, offsets):
    return {
        int(row.insn): offsets.get(f"{row.struct}.{row.field}")
        for row in relocations.itertuples(index=False)
    }

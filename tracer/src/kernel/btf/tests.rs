//! The BTF parser against blobs laid out as the kernel lays them out, the
//! running kernel's BTF, and every truncation and corruption of a sample.

use super::*;

/// Builds BTF blobs for tests, the way the kernel lays them out.
#[derive(Default)]
pub(crate) struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Self {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn head(&mut self, name: &str, kind: u32, vlen: u32, flag: bool, st: u32) -> u32 {
        let name = self.str(name);
        let info = (u32::from(flag) << 31) | (kind << 24) | vlen;
        for v in [name, info, st] {
            self.types.extend_from_slice(&v.to_le_bytes());
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn word(&mut self, v: u32) {
        self.types.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
        let id = self.head(name, 1, 0, false, size);
        self.word(size * 8);
        id
    }

    pub(crate) fn ptr(&mut self, to: u32) -> u32 {
        self.head("", 2, 0, false, to)
    }

    pub(crate) fn typedef(&mut self, name: &str, to: u32) -> u32 {
        self.head(name, 8, 0, false, to)
    }

    pub(crate) fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
        let id = self.head("", 3, 0, false, 0);
        self.word(elem);
        self.word(index);
        self.word(n);
        id
    }

    /// Members: (name, type, byte offset).
    pub(crate) fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        let id = self.head(name, 4, members.len() as u32, false, size);
        for &(m, ty, off) in members {
            let m = self.str(m);
            self.word(m);
            self.word(ty);
            self.word(off * 8);
        }
        id
    }

    pub(crate) fn union(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        let id = self.head(name, 5, members.len() as u32, false, size);
        for &(m, ty, off) in members {
            let m = self.str(m);
            self.word(m);
            self.word(ty);
            self.word(off * 8);
        }
        id
    }

    pub(crate) fn enumeration(&mut self, name: &str, values: &[(&str, i32)]) -> u32 {
        let id = self.head(name, 6, values.len() as u32, false, 4);
        for &(v, val) in values {
            let v = self.str(v);
            self.word(v);
            self.word(val as u32);
        }
        id
    }

    pub(crate) fn func_proto(&mut self, ret: u32, params: &[u32]) -> u32 {
        let id = self.head("", 13, params.len() as u32, false, ret);
        for &p in params {
            self.word(0);
            self.word(p);
        }
        id
    }

    pub(crate) fn func(&mut self, name: &str, proto: u32) -> u32 {
        self.head(name, 12, 0, false, proto)
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.push(1); // version
        out.push(0); // flags
        out.extend_from_slice(&(HEADER_MIN as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

fn sample() -> Vec<u8> {
    let mut b = Builder::new();
    let u64t = b.int("long unsigned int", 8);
    let u32t = b.int("unsigned int", 4);
    let counter = b.strukt("", 8, &[("counter", u64t, 0)]);
    let atomic = b.typedef("atomic_long_t", counter);
    let pc = b.strukt(
        "page_counter",
        64,
        &[("usage", atomic, 0), ("high", u64t, 40)],
    );
    let inner = b.strukt("", 16, &[("owner", u64t, 0), ("rss", u32t, 8)]);
    let un = b.union("", 16, &[("x", u32t, 0)]);
    let _mm = b.strukt(
        "mm_struct",
        64,
        &[("a", u32t, 0), ("", inner, 16), ("", un, 32)],
    );
    let _memcg = b.strukt("mem_cgroup", 256, &[("css", u64t, 0), ("memory", pc, 128)]);
    b.enumeration(
        "cgroup_subsys_id",
        &[("cpuset_cgrp_id", 0), ("memory_cgrp_id", 4)],
    );
    let void_ptr = b.ptr(0);
    let task = b.strukt("task_struct", 100, &[("pid", u32t, 0)]);
    let task_ptr = b.ptr(task);
    let proto = b.func_proto(0, &[void_ptr, task_ptr, u32t]);
    let fptr = b.ptr(proto);
    b.typedef("btf_trace_mark_victim", fptr);
    let f = b.func_proto(0, &[]);
    b.func("mem_cgroup_handle_over_high", f);
    let arr = b.array(u64t, u32t, 4);
    b.strukt("holder", 32, &[("slots", arr, 0)]);
    b.build()
}

#[test]
fn nested_field_offsets_add_up() {
    let btf = Btf::parse(&sample()).unwrap();
    assert_eq!(
        btf.field_offset("mem_cgroup", &["memory", "usage"])
            .unwrap(),
        128
    );
    assert_eq!(
        btf.field_offset("mem_cgroup", &["memory", "high"]).unwrap(),
        168
    );
}

#[test]
fn anonymous_members_are_searched() {
    let btf = Btf::parse(&sample()).unwrap();
    assert_eq!(btf.field_offset("mm_struct", &["owner"]).unwrap(), 16);
    assert_eq!(btf.field_offset("mm_struct", &["rss"]).unwrap(), 24);
    assert_eq!(btf.field_offset("mm_struct", &["x"]).unwrap(), 32);
}

#[test]
fn missing_field_names_the_path() {
    let btf = Btf::parse(&sample()).unwrap();
    let err = btf
        .field_offset("mem_cgroup", &["memory", "nope"])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no field named `mem_cgroup.memory.nope` in BTF"
    );
}

#[test]
fn enums_funcs_and_tracepoint_protos() {
    let btf = Btf::parse(&sample()).unwrap();
    assert_eq!(btf.enum_value("memory_cgrp_id"), Some(4));
    assert!(btf.has_func("mem_cgroup_handle_over_high"));
    assert!(!btf.has_func("__mem_cgroup_handle_over_high"));
    let params = btf.raw_tracepoint_params("mark_victim").unwrap();
    assert_eq!(params.len(), 2);
    assert!(btf.is_ptr_to_struct(params[0], "task_struct"));
    assert!(btf.is_int(params[1]));
}

#[test]
fn sizes_follow_typedefs_and_arrays() {
    let btf = Btf::parse(&sample()).unwrap();
    let (ty, off) = btf.field("holder", &["slots"]).unwrap();
    assert_eq!(off, 0);
    assert_eq!(btf.size_of(ty), Some(32));
    let atomic = btf.find("atomic_long_t", Kind::Typedef).unwrap();
    assert_eq!(btf.size_of(atomic), Some(8));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let good = sample();
    assert!(Btf::parse(&[]).is_err());
    assert!(matches!(
        Btf::parse(&[0u8; 64]).unwrap_err(),
        BtfError::BadMagic(0)
    ));
    // Every truncation and every single-byte corruption parses or fails
    // cleanly.
    for len in 0..good.len() {
        let _ = Btf::parse(&good[..len]);
    }
    for at in 0..good.len() {
        for bit in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[at] ^= bit;
            if let Ok(btf) = Btf::parse(&bad) {
                let _ = btf.field_offset("mem_cgroup", &["memory", "high"]);
                let _ = btf.raw_tracepoint_params("mark_victim");
            }
        }
    }
}

#[test]
fn reference_loops_do_not_hang() {
    let mut b = Builder::new();
    // typedef 1 -> typedef 2 -> typedef 1
    b.typedef("a", 2);
    b.typedef("b", 1);
    let btf = Btf::parse(&b.build()).unwrap();
    let _ = btf.resolve(1);
    assert_eq!(btf.size_of(1), None);
}

#[test]
fn running_kernel_btf_parses() {
    let path = Path::new(VMLINUX_BTF);
    if !path.exists() {
        eprintln!("skipped: {VMLINUX_BTF} absent (kernel built without CONFIG_DEBUG_INFO_BTF)");
        return;
    }
    let btf = Btf::from_sys_fs().unwrap();
    assert!(btf.find("task_struct", Kind::Struct).is_some());
    assert!(btf.field_offset("task_struct", &["pid"]).unwrap() > 0);
}

//! A small reader of BTF, the kernel's type information.
//!
//! Rust eBPF programs have no CO-RE relocations, so memtrace reads the
//! offsets of the few kernel struct fields its programs touch from
//! `/sys/kernel/btf/vmlinux` and hands them to the programs as globals
//! (see [`crate::kernel::offsets`]). This module parses just enough of the
//! format for that: named types, struct and union members (following
//! anonymous members), enums, functions and function prototypes.
//!
//! The input is untrusted bytes: every read is bounds-checked and a
//! malformed blob yields a [`BtfError`], never a panic.

use std::collections::HashMap;
use std::path::Path;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_MIN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not BTF: bad magic {0:#06x}")]
    BadMagic(u16),
    #[error("big-endian BTF is not supported")]
    BigEndian,
    #[error("truncated BTF: {0}")]
    Truncated(&'static str),
    #[error("malformed BTF: {0}")]
    Malformed(String),
    #[error("no {kind} named `{name}` in BTF")]
    NotFound { kind: &'static str, name: String },
    #[error("`{0}` is a bitfield; memtrace reads only whole fields")]
    Bitfield(String),
}

/// BTF kinds this reader distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Void,
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Struct => "struct",
            Self::Union => "union",
            Self::Enum | Self::Enum64 => "enum",
            Self::Typedef => "typedef",
            Self::Func => "function",
            Self::FuncProto => "function prototype",
            _ => "type",
        }
    }
}

/// A struct or union member.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub type_id: u32,
    pub bit_offset: u32,
    /// Non-zero for a bitfield.
    pub bitfield_size: u32,
}

/// One BTF type.
#[derive(Clone, Debug)]
pub struct Type {
    pub kind: Kind,
    pub name: String,
    /// Size for int/struct/union/enum/float/datasec.
    pub size: u32,
    /// Referenced type for ptr/typedef/qualifiers/func/var, element type
    /// for arrays, return type for function prototypes.
    pub type_id: u32,
    /// Array element count.
    pub nelems: u32,
    pub members: Vec<Member>,
    /// Function prototype parameter types.
    pub params: Vec<u32>,
    /// Enum variants.
    pub enumerators: Vec<(String, i64)>,
}

/// Parsed BTF with a name index.
#[derive(Debug)]
pub struct Btf {
    types: Vec<Type>,
    by_name: HashMap<String, Vec<u32>>,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32, BtfError> {
        let bytes = self
            .data
            .get(self.pos..self.pos + 4)
            .ok_or(BtfError::Truncated("type section"))?;
        self.pos += 4;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn skip(&mut self, n: usize) -> Result<(), BtfError> {
        if self
            .pos
            .checked_add(n)
            .is_none_or(|end| end > self.data.len())
        {
            return Err(BtfError::Truncated("type section"));
        }
        self.pos += n;
        Ok(())
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
}

fn le_u32(data: &[u8], at: usize) -> Result<u32, BtfError> {
    let bytes = data.get(at..at + 4).ok_or(BtfError::Truncated("header"))?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn string_at(strings: &[u8], off: u32) -> Result<String, BtfError> {
    let start = off as usize;
    let tail = strings
        .get(start..)
        .ok_or_else(|| BtfError::Malformed(format!("string offset {off} out of range")))?;
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| BtfError::Malformed(format!("unterminated string at {off}")))?;
    Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
}

impl Btf {
    /// Reads and parses the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses raw BTF (the contents of `/sys/kernel/btf/vmlinux`).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < HEADER_MIN {
            return Err(BtfError::Truncated("header"));
        }
        let magic = u16::from_le_bytes([data[0], data[1]]);
        if magic == MAGIC.swap_bytes() {
            return Err(BtfError::BigEndian);
        }
        if magic != MAGIC {
            return Err(BtfError::BadMagic(magic));
        }
        let hdr_len = le_u32(data, 4)? as usize;
        let type_off = le_u32(data, 8)? as usize;
        let type_len = le_u32(data, 12)? as usize;
        let str_off = le_u32(data, 16)? as usize;
        let str_len = le_u32(data, 20)? as usize;
        let section = |off: usize, len: usize, what: &'static str| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some(start..start.checked_add(len)?))
                .and_then(|range| data.get(range))
                .ok_or(BtfError::Truncated(what))
        };
        let type_data = section(type_off, type_len, "type section")?;
        let strings = section(str_off, str_len, "string section")?;

        let mut types = vec![Type {
            kind: Kind::Void,
            name: String::new(),
            size: 0,
            type_id: 0,
            nelems: 0,
            members: Vec::new(),
            params: Vec::new(),
            enumerators: Vec::new(),
        }];
        let mut r = Reader {
            data: type_data,
            pos: 0,
        };
        while !r.done() {
            let name_off = r.u32()?;
            let info = r.u32()?;
            let size_or_type = r.u32()?;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let raw_kind = (info >> 24) & 0x1f;
            let kind = Kind::from_raw(raw_kind)
                .ok_or_else(|| BtfError::Malformed(format!("unknown kind {raw_kind}")))?;
            let mut ty = Type {
                kind,
                name: string_at(strings, name_off)?,
                size: 0,
                type_id: 0,
                nelems: 0,
                members: Vec::new(),
                params: Vec::new(),
                enumerators: Vec::new(),
            };
            match kind {
                Kind::Int => {
                    ty.size = size_or_type;
                    r.skip(4)?;
                }
                Kind::Float => ty.size = size_or_type,
                Kind::Array => {
                    ty.type_id = r.u32()?;
                    let _index_type = r.u32()?;
                    ty.nelems = r.u32()?;
                }
                Kind::Struct | Kind::Union => {
                    ty.size = size_or_type;
                    for _ in 0..vlen {
                        let m_name = r.u32()?;
                        let m_type = r.u32()?;
                        let m_off = r.u32()?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (m_off & 0x00ff_ffff, m_off >> 24)
                        } else {
                            (m_off, 0)
                        };
                        ty.members.push(Member {
                            name: string_at(strings, m_name)?,
                            type_id: m_type,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                }
                Kind::Enum => {
                    ty.size = size_or_type;
                    for _ in 0..vlen {
                        let e_name = r.u32()?;
                        let value = r.u32()?;
                        let value = if kind_flag {
                            i64::from(value)
                        } else {
                            i64::from(value as i32)
                        };
                        ty.enumerators.push((string_at(strings, e_name)?, value));
                    }
                }
                Kind::Enum64 => {
                    ty.size = size_or_type;
                    for _ in 0..vlen {
                        let e_name = r.u32()?;
                        let lo = u64::from(r.u32()?);
                        let hi = u64::from(r.u32()?);
                        ty.enumerators
                            .push((string_at(strings, e_name)?, ((hi << 32) | lo) as i64));
                    }
                }
                Kind::FuncProto => {
                    ty.type_id = size_or_type;
                    for _ in 0..vlen {
                        let _p_name = r.u32()?;
                        ty.params.push(r.u32()?);
                    }
                }
                Kind::Var | Kind::DeclTag => {
                    ty.type_id = size_or_type;
                    r.skip(4)?;
                }
                Kind::Datasec => {
                    ty.size = size_or_type;
                    r.skip(vlen * 12)?;
                }
                Kind::Ptr
                | Kind::Fwd
                | Kind::Typedef
                | Kind::Volatile
                | Kind::Const
                | Kind::Restrict
                | Kind::Func
                | Kind::TypeTag => ty.type_id = size_or_type,
                Kind::Void => unreachable!("kind 0 is rejected by Kind::from_raw"),
            }
            types.push(ty);
        }

        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, ty) in types.iter().enumerate() {
            if !ty.name.is_empty() {
                by_name.entry(ty.name.clone()).or_default().push(id as u32);
            }
        }
        Ok(Self { types, by_name })
    }

    pub fn type_by_id(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// The id of the type named `name` of kind `kind`.
    pub fn find(&self, name: &str, kind: Kind) -> Option<u32> {
        self.by_name
            .get(name)?
            .iter()
            .copied()
            .find(|&id| self.types[id as usize].kind == kind)
    }

    fn find_or_err(&self, name: &str, kind: Kind) -> Result<u32, BtfError> {
        self.find(name, kind).ok_or_else(|| BtfError::NotFound {
            kind: kind.as_str(),
            name: name.to_string(),
        })
    }

    /// Whether the kernel has a (non-inlined) function of that name.
    pub fn has_func(&self, name: &str) -> bool {
        self.find(name, Kind::Func).is_some()
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    pub fn resolve(&self, mut id: u32) -> u32 {
        // Bounded: a malformed blob could loop.
        for _ in 0..32 {
            match self.type_by_id(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        Kind::Typedef
                            | Kind::Volatile
                            | Kind::Const
                            | Kind::Restrict
                            | Kind::TypeTag
                    ) =>
                {
                    id = t.type_id;
                }
                _ => break,
            }
        }
        id
    }

    /// Size in bytes of a type, following typedefs, qualifiers and arrays.
    pub fn size_of(&self, id: u32) -> Option<u64> {
        self.size_of_depth(id, 0)
    }

    fn size_of_depth(&self, id: u32, depth: u32) -> Option<u64> {
        if depth > 8 {
            return None;
        }
        let t = self.type_by_id(self.resolve(id))?;
        match t.kind {
            Kind::Ptr => Some(8),
            Kind::Array => self
                .size_of_depth(t.type_id, depth + 1)?
                .checked_mul(u64::from(t.nelems)),
            Kind::Int | Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 | Kind::Float => {
                Some(u64::from(t.size))
            }
            _ => None,
        }
    }

    /// Finds member `name` of a struct or union, looking through anonymous
    /// struct/union members as C does. Returns the member and its byte
    /// offset from the start of `container`.
    pub fn member(&self, container: u32, name: &str) -> Option<(&Member, u32)> {
        self.member_depth(container, name, 0)
    }

    fn member_depth(&self, container: u32, name: &str, depth: u32) -> Option<(&Member, u32)> {
        if depth > 8 {
            return None;
        }
        let t = self.type_by_id(self.resolve(container))?;
        if !matches!(t.kind, Kind::Struct | Kind::Union) {
            return None;
        }
        for m in &t.members {
            if m.name == name {
                return Some((m, m.bit_offset / 8));
            }
        }
        for m in t.members.iter().filter(|m| m.name.is_empty()) {
            if let Some((found, off)) = self.member_depth(m.type_id, name, depth + 1) {
                return Some((found, m.bit_offset / 8 + off));
            }
        }
        None
    }

    /// Byte offset of a field path inside a named struct, e.g.
    /// `("mem_cgroup", &["memory", "usage"])`.
    pub fn field_offset(&self, strukt: &str, path: &[&str]) -> Result<u32, BtfError> {
        Ok(self.field(strukt, path)?.1)
    }

    /// Like [`Self::field_offset`], also returning the field's type id.
    pub fn field(&self, strukt: &str, path: &[&str]) -> Result<(u32, u32), BtfError> {
        let mut container = self.find_or_err(strukt, Kind::Struct)?;
        let mut offset = 0u32;
        let mut type_id = container;
        for (i, part) in path.iter().enumerate() {
            let (member, off) = self
                .member(container, part)
                .ok_or_else(|| BtfError::NotFound {
                    kind: "field",
                    name: format!("{strukt}.{}", path[..=i].join(".")),
                })?;
            if member.bitfield_size != 0 || member.bit_offset % 8 != 0 {
                return Err(BtfError::Bitfield(format!("{strukt}.{}", path.join("."))));
            }
            offset = offset
                .checked_add(off)
                .ok_or_else(|| BtfError::Malformed("field offset overflow".into()))?;
            type_id = member.type_id;
            container = member.type_id;
        }
        Ok((type_id, offset))
    }

    /// Value of an enumerator, searched in every enum.
    pub fn enum_value(&self, enumerator: &str) -> Option<i64> {
        self.types
            .iter()
            .filter(|t| matches!(t.kind, Kind::Enum | Kind::Enum64))
            .flat_map(|t| t.enumerators.iter())
            .find(|(name, _)| name == enumerator)
            .map(|(_, v)| *v)
    }

    /// The parameter types of the raw tracepoint `name`, from the kernel's
    /// `btf_trace_<name>` typedef, without the leading `void *__data`: index
    /// `i` here is raw tracepoint argument `i`.
    pub fn raw_tracepoint_params(&self, name: &str) -> Result<Vec<u32>, BtfError> {
        let typedef = self.find_or_err(&format!("btf_trace_{name}"), Kind::Typedef)?;
        let ptr = self.resolve(typedef);
        let proto = self
            .type_by_id(ptr)
            .filter(|t| t.kind == Kind::Ptr)
            .and_then(|t| self.type_by_id(t.type_id))
            .filter(|t| t.kind == Kind::FuncProto)
            .ok_or_else(|| {
                BtfError::Malformed(format!("btf_trace_{name} is not a function pointer"))
            })?;
        Ok(proto.params.iter().skip(1).copied().collect())
    }

    /// Whether `id` is a pointer to `struct <name>`.
    pub fn is_ptr_to_struct(&self, id: u32, name: &str) -> bool {
        let Some(ptr) = self.type_by_id(self.resolve(id)) else {
            return false;
        };
        if ptr.kind != Kind::Ptr {
            return false;
        }
        self.type_by_id(self.resolve(ptr.type_id))
            .is_some_and(|t| t.kind == Kind::Struct && t.name == name)
    }

    /// Whether `id` is an integer type (after typedefs).
    pub fn is_int(&self, id: u32) -> bool {
        self.type_by_id(self.resolve(id))
            .is_some_and(|t| matches!(t.kind, Kind::Int | Kind::Enum))
    }
}

#[cfg(test)]
pub(crate) mod tests;

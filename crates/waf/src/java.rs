//! Java attacks (the class of CRS rule file 944): serialized Java objects, the class names that
//! gadget chains and code-execution payloads name, OGNL/EL/SpEL expressions that reach the
//! runtime, Spring4Shell's `class.module.classLoader`, and JSP uploads.
//!
//! * Deserialization magic: `aced0005` in hex, the raw bytes `AC ED 00 05`, or their base64
//!   forms at any of the three alignments (`rO0AB`, `KztAAU`, `Cs7QAF`, case-sensitive).
//! * Class and package names used in RCE payloads (the list knowledge is CRS's
//!   `java-classes.data`, Apache-2.0): `java.lang.Runtime`, `java.lang.ProcessBuilder`,
//!   `java.lang.reflect`, `javax.script.ScriptEngineManager`, `org.apache.commons`,
//!   `com.sun.org.apache` (Xalan's `TemplatesImpl`), `ysoserial`, …, matched at a name
//!   boundary. Plain `java.lang` or `java.util` in prose is not reported.
//! * `Runtime`/`ProcessBuilder` together with a gadget name (`InvokerTransformer`,
//!   `CloneTransformer`, `XMLDecoder`, …) or a `java.` package in the same token.
//! * Expression-language markers: `#_memberAccess`, `@java.lang.…@`, `T(java.…)`,
//!   `.getRuntime(`, `Class.forName(`, `.getClass().forName(`, `%{(#`, `(#context`.
//!
//! `${jndi:…}` is left to the Log4Shell detector so one payload is not reported twice.

use crate::needles::{Needles, starts_with_ignore_case};

/// Class and package names, lower case, matched after a non-identifier character.
const CLASSES: &[&str] = &[
    "com.opensymphony.xwork2",
    "com.sun.org.apache",
    "com.sun.rowset.jdbcrowsetimpl",
    "com.mchange.v2.c3p0",
    "com.bea.core.repackaged",
    "classloader",
    "declaredclass",
    "freemarker.core",
    "freemarker.template",
    "freemarker.ext.rhino",
    "java.io.bufferedinputstream",
    "java.io.bufferedreader",
    "java.io.bytearrayinputstream",
    "java.io.bytearrayoutputstream",
    "java.io.chararrayreader",
    "java.io.datainputstream",
    "java.io.file",
    "java.io.filteroutputstream",
    "java.io.filterinputstream",
    "java.io.filterreader",
    "java.io.inputstream",
    "java.io.ioexception",
    "java.io.linenumberreader",
    "java.io.objectinputstream",
    "java.io.objectoutputstream",
    "java.io.outputstream",
    "java.io.pipedoutputstream",
    "java.io.pipedreader",
    "java.io.printstream",
    "java.io.pushbackinputstream",
    "java.io.reader",
    "java.io.stringreader",
    "java.lang.class",
    "java.lang.enum",
    "java.lang.integer",
    "java.lang.number",
    "java.lang.object",
    "java.lang.process",
    "java.lang.reflect",
    "java.lang.runtime",
    "java.lang.string",
    "java.lang.system",
    "java.lang.thread",
    "java.net.httpurlconnection",
    "java.net.jarurlconnection",
    "java.net.datagramsocket",
    "java.net.multicastsocket",
    "java.net.serversocket",
    "java.net.socket",
    "java.net.url",
    "java.beans.xmldecode",
    "java.nio.file",
    "java.rmi",
    "javassist",
    "javax.naming.initialcontext",
    "javax.script",
    "javax.management",
    "javax.xml.parsers",
    "javax.xml.stream",
    "ognlcontext",
    "ognlutil",
    "org.apache.commons",
    "org.apache.struts",
    "org.apache.xalan",
    "org.apache.xbean",
    "org.apache.tomcat.dbcp",
    "org.codehaus.groovy",
    "org.springframework.context.support",
    "org.springframework.beans.factory",
    "org.dom4j.io.saxreader",
    "org.jdom2.input.saxbuilder",
    "org.omg.corba",
    "org.xml.sax",
    "org.mozilla.javascript",
    "propertyutilsbean",
    "sun.reflect",
    "sun.misc.base64decoder",
    "templatesimpl",
    "ysoserial",
    "scriptenginemanager",
    "filesystemxmlapplicationcontext",
    "classpathxmlapplicationcontext",
];

/// Commons-Collections style gadget names; reported with `runtime`/`processbuilder` in the
/// same token.
const GADGETS: &[&str] = &[
    "clonetransformer",
    "forclosure",
    "instantiatefactory",
    "instantiatetransformer",
    "invokertransformer",
    "prototypeclonefactory",
    "prototypeserializationfactory",
    "whileclosure",
    "getproperty",
    "filewriter",
    "xmldecoder",
    "unmarshaller",
    "base64data",
    "java.",
];

/// Expression-language and reflection markers, lower case, matched anywhere.
const EXPRESSIONS: &[&str] = &[
    "#_memberaccess",
    "@java.lang.",
    "@java.io.",
    "@ognl",
    "t(java.",
    "t (java.",
    ".getruntime(",
    "class.forname(",
    ".getclass().forname(",
    ".getclass().getclassloader(",
    "%{(#",
    "(#context",
    "#context[",
    "#application[",
    "class.module.classloader",
    "new java.",
    "new javax.",
    "java.lang.runtime.getruntime",
    ".newinstance().getenginebyname(",
    "aced0005",
];

static CLASS_SET: Needles = Needles::new(CLASSES);
static GADGET_SET: Needles = Needles::new(GADGETS);
static EXPRESSION_SET: Needles = Needles::new(EXPRESSIONS);

/// Checks one decoded value.
pub(crate) fn check(value: &[u8]) -> bool {
    magic(value)
        || EXPRESSION_SET.any_in(value, false)
        || CLASS_SET.any_in(value, true)
        || gadget_token(value)
}

/// `needle` (lower case) occurs in `value`, ignoring ASCII case.
fn has_letters(value: &[u8], needle: &[u8]) -> bool {
    (0..value.len()).any(|i| starts_with_ignore_case(&value[i..], needle))
}

/// The serialisation stream header, raw or base64 at any alignment.
fn magic(value: &[u8]) -> bool {
    value.iter().enumerate().any(|(i, &b)| {
        let rest = &value[i..];
        match b {
            0xac => rest.starts_with(b"\xac\xed\x00\x05"),
            b'r' => rest.starts_with(b"rO0AB"),
            b'K' => rest.starts_with(b"KztAAU"),
            b'C' => rest.starts_with(b"Cs7QAF"),
            _ => false,
        }
    })
}

/// A whitespace-free token naming `runtime` or `processbuilder` together with a gadget or a
/// `java.` package (`ProcessBuilder.evil.clonetransformer`, `java.evil.runtime`).
fn gadget_token(value: &[u8]) -> bool {
    if !value.contains(&b'.') {
        return false;
    }
    value
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| t.contains(&b'.'))
        .any(|t| {
            (has_letters(t, b"runtime") || has_letters(t, b"processbuilder"))
                && GADGET_SET.any_in(t, false)
        })
}

/// A file name a JSP container would execute (`shell.jsp`, `a.jspx`, `shell. jsp`): checked on
/// multipart file names and `X-Filename`-style headers only.
pub(crate) fn jsp_filename(value: &[u8]) -> bool {
    let compact: Vec<u8> = value
        .iter()
        .filter(|b| !b.is_ascii_whitespace())
        .map(u8::to_ascii_lowercase)
        .collect();
    let compact = compact.strip_suffix(b"\0").unwrap_or(&compact);
    compact.ends_with(b".jsp") || compact.ends_with(b".jspx")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        for v in [
            "java.lang.Runtime",
            "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcA",
            "aced00057372",
            "ProcessBuilder.evil.clonetransformer",
            "java.evil.runtime",
            "runtime.forclosure",
            "%{(#_memberAccess['allowStaticMethodAccess']=true)}",
            "${T(java.lang.Runtime).getRuntime().exec('id')}",
            "@java.lang.Runtime@getRuntime().exec('id')",
            "class.module.classLoader.resources.context.parent.pipeline.first.pattern=x",
            "com.sun.org.apache.xalan.internal.xsltc.trax.TemplatesImpl",
            "org.apache.commons.collections.functors.InvokerTransformer",
            "javax.script.ScriptEngineManager",
            "{\"@type\":\"com.sun.rowset.JdbcRowSetImpl\"}",
            "''.getClass().forName('java.lang.Runtime')",
            "ysoserial CommonsCollections5",
        ] {
            assert!(check(v.as_bytes()), "{v}");
        }
        assert!(check(b"\xac\xed\x00\x05sr"));
    }

    #[test]
    fn benign_lookalikes() {
        for v in [
            "Runtime error",
            "java.lang is a package",
            "Java Runtime Environment 17",
            "java.util.List is an interface",
            "select a plan",
            "Hello ${name}, welcome back",
            "jane.doe@example.com",
            "The runtime was 2 hours",
            "#hashtag @mention",
            "myclassloader.example",
            "rO0 is not magic",
        ] {
            assert!(!check(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn needle_lists_fit_the_index() {
        assert!(CLASSES.len() <= 128 && GADGETS.len() <= 128 && EXPRESSIONS.len() <= 128);
    }

    #[test]
    fn jsp_names() {
        assert!(jsp_filename(b"shell.jsp"));
        assert!(jsp_filename(b"shell. JSPX"));
        assert!(!jsp_filename(b"report.pdf"));
        assert!(!jsp_filename(b"jsp"));
    }
}
